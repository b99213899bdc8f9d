"""The configuration: read from YAML into typed dataclasses, every problem reported with its
key path. Loading reads the templates it names, so it may use the workflow helpers; nothing
here talks to a server."""
