"""What several parts of the package share and nothing else defines: defaults and file I/O."""
