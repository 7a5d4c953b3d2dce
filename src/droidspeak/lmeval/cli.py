"""``droidspeak-eval``: lm-eval's own CLI, with the ``droidspeak`` backend registered (same flags)."""

import droidspeak  # noqa: F401  (registers the backend)


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
