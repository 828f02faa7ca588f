"""Release output: Kata's release layout and tarballs (and reading a release back), SBOMs."""
