"""Local runner support code (not deployed).

``localrun.durable`` runs the app's orchestrators through the real azure-functions-durable
replay engine with an emulation of the host/DTFx side, its state on disk (see docs/durable.md).
"""
