"""The `fleet` command line (entry point: ``shared.tools.cli.main:main``)."""
