from emulator.testing import emulator, emulator_factory  # noqa: F401  (fixtures)
