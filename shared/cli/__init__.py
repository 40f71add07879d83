"""The `fleet` command line (entry point: ``shared.cli.main:main``)."""
