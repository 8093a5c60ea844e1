"""Each chapter's experiments, measurements and plots (``chNN_*.py``), out of the student's way. A chapter's lab
imports the library, :mod:`mmcourse.viz` and :mod:`mmcourse.data`, and never another chapter's lab; what several
chapters share is in :mod:`mmcourse.labs.common`."""
