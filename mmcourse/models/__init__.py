"""The course's models, built from :mod:`mmcourse.nn` and trained with :mod:`mmcourse.objectives`: fusion
classifiers, TinyCLIP, the ALBEF-style model, the captioner and the VQA model. Model classes only."""
