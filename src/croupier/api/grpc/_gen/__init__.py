"""Code generated from ``protos/`` by ``make protos``: do not edit it by hand."""
