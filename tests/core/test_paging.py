"""The one paging helper (core/paging.py): the page parameters every list accepts, and the neighbour links."""

import pytest
from django.test import RequestFactory

from core import paging
from core.api_errors import ApiError


@pytest.mark.parametrize("raw", ["0", "x", "-1", "+2", " 2", "2_0", "٢", "1000001", "9" * 5000])
def test_a_page_that_is_not_a_whole_number_in_range_is_refused_naming_the_parameter(raw):
    with pytest.raises(ApiError) as caught:
        paging.page_number({"page": raw})
    error = caught.value
    assert (error.status_code, error.code, error.extra) == (400, "invalid_field", {"field": "page"})
    assert error.message == "page: must be a whole number from 1 to 1000000"


def test_an_absent_or_empty_page_is_the_first():
    assert paging.page_number({}) == paging.page_number({"page": ""}) == 1
    assert paging.page_number({"page": "1000000"}) == 1_000_000


def test_a_page_knows_its_rows_its_neighbours_and_the_last_page():
    rows = list(range(5))
    first, last, beyond = (paging.Page(n, 2, 5) for n in (1, 3, 9))
    assert (first.rows(rows), last.rows(rows), beyond.rows(rows)) == ([0, 1], [4], [])
    assert (first.has_previous, first.has_next, last.has_next, last.last) == (False, True, False, 3)
    assert paging.Page(1, 2, 0).last == 1


def test_links_keep_the_other_parameters_absolute_for_the_api_relative_for_the_site():
    request = RequestFactory().get("/api/nodes", {"gpu": "rtx", "page": "2", "page_size": "2"})
    page = paging.Page(2, 2, 9)
    api = paging.neighbours(request, page)
    assert api == {
        "next": "http://testserver/api/nodes?gpu=rtx&page=3&page_size=2",
        "previous": "http://testserver/api/nodes?gpu=rtx&page=1&page_size=2",
    }
    assert paging.neighbours(request, paging.Page(1, 2, 2), absolute=False) == {"next": None, "previous": None}
    assert paging.page_link(request, 4, absolute=False) == "?gpu=rtx&page=4&page_size=2"
