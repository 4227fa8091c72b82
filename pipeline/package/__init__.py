"""What ships: drop-in files for the MMDeploy SDK and rtmlib, and the release of verified artifacts."""
