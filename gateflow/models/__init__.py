"""Layer *models*: parameters (initialisation, validation, files), inputs and the
weight-file formats."""
