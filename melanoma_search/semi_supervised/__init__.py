"""Learning from unlabelled images: an exported ensemble's calibrated pseudo-labels (``pseudo``) and the noisy-student
round that trains a new study on them (``student``, ``run --student-of``)."""

from __future__ import annotations

from melanoma_search.semi_supervised.pseudo import PseudoLabels, pseudo_label
from melanoma_search.semi_supervised.student import StudentRound, plan_student_round

__all__ = ["PseudoLabels", "StudentRound", "plan_student_round", "pseudo_label"]
