"""CORe50 data layer: dataset root, filelists, scenarios, image loading, synthetic data."""
