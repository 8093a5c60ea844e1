"""The layers a student reads: cross-modal attention, transformer blocks, modality encoders (article §2.1, §3)."""
