"""Build hooks: ship ``libmtl_repmtl.pth`` into site-packages (regular and editable installs).

The ``.pth`` line imports the tiny stdlib-only module ``libmtl_repmtl_autoload``, which installs an
import hook that registers the plugins when ``LibMTL`` is imported (opt out: LIBMTL_REPMTL_AUTOLOAD=0).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "libmtl_repmtl.pth"
HERE = Path(__file__).resolve().parent


class build_py_with_pth(build_py):
    """Copy the ``.pth`` hook to the root of the built library (it lands in site-packages)."""

    def run(self) -> None:
        super().run()
        self.copy_file(str(HERE / PTH), str(Path(self.build_lib) / PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]

    def get_output_mapping(self) -> dict[str, str]:
        mapping = dict(super().get_output_mapping())
        mapping[str(Path(self.build_lib) / PTH)] = str(HERE / PTH)
        return mapping


cmdclass: dict[str, type] = {"build_py": build_py_with_pth}

try:  # PEP 660 editable installs build their wheel in a separate command.
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        """Put the ``.pth`` hook at the root of the editable wheel as well."""

        def _install_namespaces(self, installation_dir, pth_prefix):  # type: ignore[override]
            super()._install_namespaces(installation_dir, pth_prefix)
            self.copy_file(str(HERE / PTH), str(Path(installation_dir) / PTH), preserve_mode=0)

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # pragma: no cover - setuptools < 64 has no PEP 660 support
    pass

setup(cmdclass=cmdclass)
