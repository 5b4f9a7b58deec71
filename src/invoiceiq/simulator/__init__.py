"""The offline simulator: fakes of 360dialog and Daraja, a control API and a two-phone UI."""
