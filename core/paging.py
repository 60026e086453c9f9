"""Paging for every list, over the API and on the website alike: the `page` and `page_size` parameters (whole
numbers in range, else 400 `invalid_field` naming the parameter), which rows a page holds, and the links to
the neighbouring pages. A page past the end is empty, not an error (docs/api.md)."""

from dataclasses import dataclass
from urllib.parse import urlencode

from core.api_errors import ApiError

MAX_PAGE = 1_000_000


def whole_number(params, name: str, *, default: int, maximum: int) -> int:
    """A parameter that must be a whole number from 1 to `maximum`, `default` when absent or empty. ASCII digits
    only: int() would also take " 2", "+2", "2_0" and other scripts' digits, and fail on a very long string."""
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(maximum))) or not 1 <= int(raw) <= maximum:
        raise ApiError(
            400, "invalid_field", f"{name}: must be a whole number from 1 to {maximum}", extra={"field": name}
        )
    return int(raw)


def page_number(params) -> int:
    """The `page` parameter: 1 when absent."""
    return whole_number(params, "page", default=1, maximum=MAX_PAGE)


@dataclass(frozen=True)
class Page:
    number: int  # from 1
    size: int
    count: int  # rows in the whole list

    @property
    def start(self) -> int:
        return (self.number - 1) * self.size

    @property
    def last(self) -> int:
        """The last page's number (1 for an empty list)."""
        return max(1, -(-self.count // self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.start + self.size < self.count

    def rows(self, rows, *, lazy: bool = False):
        """This page's slice of `rows` (a queryset ordered like the count): nothing past the end, without asking.
        `lazy`: the sliced queryset itself (`none()` past the end), for a caller that reads its rows its own way."""
        if lazy:
            return rows[self.start : self.start + self.size] if self.start < self.count else rows.none()
        return list(rows[self.start : self.start + self.size]) if self.start < self.count else []


def page_link(request, number: int, *, absolute: bool = True, base: str | None = None) -> str:
    """A link to another page of the same list: every other parameter kept, `page` replaced. The API gives
    absolute URLs (clients follow them as they are), the website a relative `?query`. `base`: the absolute URL of
    the request's path, made once for both neighbours (neighbours).

    The query is what `QueryDict.copy()`, `["page"] = ...` and `.urlencode()` give (each pair quoted by
    urlencode, `page` where it was, or last), written in one urlencode call: the copy is a deep copy, and the
    list's answer made two of them a request."""
    page, pairs = str(number), []
    for key, values in request.GET.lists():
        if key == "page":
            pairs.append((key, page))
            page = None
        else:
            pairs.extend((key, value) for value in values)
    if page is not None:
        pairs.append(("page", page))
    if absolute and base is None:
        base = request.build_absolute_uri(request.path)
    return (base if absolute else "") + "?" + urlencode(pairs)


def neighbours(request, page: Page, *, absolute: bool = True) -> dict:
    """`{"next": link, "previous": link}`, None at either end: the API's paging fields."""
    base = request.build_absolute_uri(request.path) if absolute and (page.has_next or page.has_previous) else None
    return {
        "next": page_link(request, page.number + 1, absolute=absolute, base=base) if page.has_next else None,
        "previous": page_link(request, page.number - 1, absolute=absolute, base=base) if page.has_previous else None,
    }


def pager(request, page: Page) -> dict:
    """What a page's pager (templates/showcase/_pager.html) reads: the page, the last page and relative links to
    its neighbours."""
    links = neighbours(request, page, absolute=False)
    return {
        "page": page.number,
        "last_page": page.last,
        "previous_link": links["previous"],
        "next_link": links["next"],
    }
