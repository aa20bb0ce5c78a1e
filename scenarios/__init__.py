"""The scenario catalogue's data: one TOML file per failure (or success).

Installed as the package data of ``mailfakes.scenario_files``. No code lives here:
the loader is :mod:`mailfakes.catalogue`, the README table
:mod:`mailfakes.markdown`.
"""
