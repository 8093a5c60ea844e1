"""Vision-language pretraining objectives — article §4.2, chapter 5 (and decoding for chapter 6).

One module per objective:

- :mod:`~mmcourse.pretraining.mlm` — masked language modelling (BERT's 15 %, 80/10/10 rule).
- :mod:`~mmcourse.pretraining.mim` — masked image modelling (MAE's random masking, loss on hidden patches).
- :mod:`~mmcourse.pretraining.itm` — image-text matching, hard negatives mined from contrastive similarity.
- :mod:`~mmcourse.pretraining.itg` — image-to-text generation: teacher-forced loss, greedy and beam search.

The models that use them live in :mod:`mmcourse.captioner` and :mod:`mmcourse.albef`.
"""

from mmcourse.pretraining.itg import (
    beam_search,
    caption_loss,
    generate,
    greedy_decode,
    shift_for_teacher_forcing,
)
from mmcourse.pretraining.itm import ITMHead, itm_accuracy, itm_loss, make_itm_pairs, sample_hard_negatives
from mmcourse.pretraining.mim import mim_loss, num_kept, patchify, random_masking, restore_order, unpatchify
from mmcourse.pretraining.mlm import IGNORE_INDEX, mask_tokens, mlm_loss, special_ids_of

__all__ = [
    "IGNORE_INDEX",
    "mask_tokens",
    "mlm_loss",
    "special_ids_of",
    "patchify",
    "unpatchify",
    "num_kept",
    "random_masking",
    "restore_order",
    "mim_loss",
    "sample_hard_negatives",
    "make_itm_pairs",
    "ITMHead",
    "itm_loss",
    "itm_accuracy",
    "shift_for_teacher_forcing",
    "caption_loss",
    "generate",
    "greedy_decode",
    "beam_search",
]
