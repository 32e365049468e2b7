"""Local runner support code (not deployed).

``localrun.durable`` runs the app's orchestrators through the real azure-functions-durable
replay engine with an in-memory emulation of the host/DTFx side (see docs/durable.md).
"""
