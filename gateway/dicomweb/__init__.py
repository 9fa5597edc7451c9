"""DICOMweb (PS3.18) endpoints: STOW-RS, QIDO-RS, WADO-RS."""
