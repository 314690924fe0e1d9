"""Self-contained HTML reports: the run report, the walk-forward report, the run comparison page,
and the SVG charts and HTML pieces they share."""
