"""Public tests of the exercise sets, one module per chapter (``ex01`` … ``ex08``), each defining ``SET``.

They ship with the package so that ``check(...)`` works wherever the course is installed. They test shapes,
invariants and small closed-form cases; the instructor's hidden tests (not in the package) compare against
reference solutions on further inputs.
"""
