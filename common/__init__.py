"""What several parts of the package share and nothing else defines: defaults, file I/O and
the reading of table cells."""
