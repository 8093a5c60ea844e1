"""Maintainer tooling: the notebook pipeline (execute, check, stamp), the nbval plugin, the offline stand-in for
pretrained CLIP, timing and the reader's map. The library never imports it."""
