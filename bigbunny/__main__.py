"""``python -m bigbunny`` = the ``bbd`` command, reached through its console-script entry point (the
shared core does not import the daemon that the entry point lives beside)."""

from importlib.metadata import entry_points

if __name__ == "__main__":
    (bbd,) = entry_points(group="console_scripts", name="bbd")
    bbd.load()()
