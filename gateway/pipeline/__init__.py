"""The pipeline: stable studies -> routing rules -> jobs -> inference -> results in the PACS."""
