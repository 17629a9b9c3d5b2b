"""``python -m bigbunny`` = the ``bbd`` command."""

from bigbunny.cli import main

if __name__ == "__main__":
    main()
