"""Entry point of the ``robustagg`` command.

``import robustagg`` imports torch and registers the native ops (about 3 s on
a small machine); ``robustagg --help``, ``--version`` and a bare ``robustagg``
need neither. For those this launcher loads ``robustagg.cli`` (stdlib only at
import) without running the package's ``__init__``; every other command goes
through the package as usual.
"""
import importlib.util
import sys
import types

_LIGHT = ("-h", "--help", "--version")


def main() -> int:
    argv = sys.argv[1:]
    if (not argv or any(a in _LIGHT for a in argv)) and "robustagg" not in sys.modules:
        spec = importlib.util.find_spec("robustagg")
        if spec is not None and spec.submodule_search_locations:
            pkg = types.ModuleType("robustagg")           # the package without its __init__
            pkg.__path__ = list(spec.submodule_search_locations)
            sys.modules["robustagg"] = pkg
            try:
                from robustagg import cli
                return cli.main(argv)
            finally:
                for name in [m for m in sys.modules if m == "robustagg" or m.startswith("robustagg.")]:
                    del sys.modules[name]
    from robustagg import cli
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
