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


def _django_link(request, number: int) -> str:
    """What page_link wrote before it stopped copying the QueryDict: the reference it must equal."""
    params = request.GET.copy()
    params["page"] = str(number)
    return request.build_absolute_uri(request.path) + "?" + params.urlencode()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "page=2",
        "gpu=rtx&page=2&page_size=2",
        "page=2&gpu=rtx",
        "page=1&page=7&tag=a&tag=b",
        "tag=a&page=&tag=b",
        "model=Qwen+2.5%2F7B&gpu=%E6%97%A5%E6%9C%AC&x=%26%3D%3F%23&y=+%2B+",
        "a=%ff%fe&b=%00&empty=&noequals",
        "q=%F0%9F%A6%99&page=3&q=~*'()!",
    ],
)
def test_a_link_is_byte_for_byte_what_the_querydict_gives(query):
    request = RequestFactory().get("/api/nodes?" + query)
    for number in (1, 2, 1_000_000):
        assert paging.page_link(request, number) == _django_link(request, number), (query, number)
    page = paging.Page(2, 2, 9)
    assert paging.neighbours(request, page) == {"next": _django_link(request, 3), "previous": _django_link(request, 1)}
