"""Post-hoc analysis of experiments on storage: results table, comparisons, plots, images, HTML report.

Entry point: ``python -m ganray.analyze EXPERIMENT_URI --out DIR`` (ganray/analyze.py), or
``ganray.analysis.report.build(uri, out)``.
"""
