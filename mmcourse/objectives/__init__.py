"""The training objectives: contrastive (ITC, SigLIP) and the pretraining objectives MLM, MIM, ITM, ITG with decoding
(article §4)."""
