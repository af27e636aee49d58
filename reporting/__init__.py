"""What a finished run becomes on disk for people to read: report.md and its tables and figures, the model card,
the Optuna study, the reports index and Grad-CAM overlays. It turns results into files and knows nothing of how
they were tuned."""
