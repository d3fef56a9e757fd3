"""The server-drawn SVG charts of the dashboard."""

import re

from ops.charts import Series, bar_chart, format_number, line_chart, nice_ceiling


def points(svg: str) -> list[tuple[str, str]]:
    return re.findall(r'<circle class="point"[^>]*data-series="([^"]*)" data-value="([^"]*)"', svg)


def test_axis_tops_are_round_numbers_a_person_reads_at_a_glance():
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 1.2, 3, 7, 42, 180)] == [1, 0.5, 1, 2, 5, 10, 50, 200]


def test_a_line_chart_draws_a_point_per_value_and_leaves_gaps_where_there_is_no_data():
    svg = line_chart(name="t", labels=["a", "b", "c", "d"], series=[Series("jobs", [1, None, 3, 4])])
    assert points(svg) == [("jobs", "1"), ("jobs", "3"), ("jobs", "4")]
    # The gap splits the line: a lone point, then a segment of two.
    assert svg.count("<polyline") == 2
    assert 'data-chart="t"' in svg and "<title>jobs, d: 4</title>" in svg


def test_names_and_labels_are_escaped():
    svg = line_chart(name="<x>", labels=["<b>"], series=[Series("<script>", [1])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_a_bar_chart_draws_one_bar_per_label_and_says_when_it_has_none():
    svg = bar_chart(name="cpu", unit="%", bars=[("general@a", 12.5), ("heavy@b", 50)])
    assert re.findall(r'<rect class="bar"[^>]*data-value="([^"]*)"', svg) == ["12.5", "50"]
    assert "no data" in bar_chart(name="cpu", bars=[])


def test_numbers_keep_three_significant_digits():
    assert [format_number(v) for v in (0, 0.025, 2.5, 49.14, 101.3, 1234.5)] == [
        "0",
        "0.025",
        "2.5",
        "49.1",
        "101",
        "1234",
    ]
