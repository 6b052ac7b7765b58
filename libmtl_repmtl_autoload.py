"""Placeholder: replaced by the plugin host's import hook."""
