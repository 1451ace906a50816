"""The simulated world behind the sample data: calendar, catalogue, customers and purchases.

Everything is drawn as whole NumPy arrays; there is no Python loop over customers, invoices or
lines. Times are integer seconds since midnight of the window's first day, in local time.

The purchase process is the one the customer-base models assume (Pareto/NBD with a
seasonal clock):

* each customer registers on a day drawn from a slowly growing, seasonal intake;
* most buy once shortly after registering; after that, purchases arrive as a Poisson process
  whose rate is Gamma distributed across customers (a few heavy buyers, many light ones);
* each customer drops out after an exponential lifetime whose rate is itself Gamma distributed,
  and buys nothing after it;
* the clock runs faster on busy days: weekends, the 618 and Double 11 festivals, Double 12, the
  shopping before the Spring Festival, and slower during the Spring Festival itself;
* the value of an order is lognormal around a customer-level median, itself lognormal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from kequn.errors import InputError
from kequn.sample import _vocab as vocab
from kequn.sample._format import DAY, stable_order

FIRST_PURCHASE_SHARE = 0.72  # share of customers who buy right after registering
EXTRA_LINES_MEAN = 1.6  # lines per invoice are 1 + Poisson(1.6) before de-duplication
CANCEL_SHARE = 0.02  # share of invoices later cancelled
# lines per purchase invoice (1 + Poisson(1.6), less a product drawn twice in one invoice)
# plus the cancellation lines that come with it; measured, used to hit ``lines_per_customer``
_LINES_PER_INVOICE = 2.55


_RESOLUTION = 1 << 16  # a weight is rounded to a multiple of 1/65536 when drawing


def sampling_table(weights: list[float] | np.ndarray) -> np.ndarray:
    """The index drawn for each of 65,536 equally likely slots, slots shared by weight.

    Looking a random slot up in this table is ten times faster than a binary search over
    cumulative weights, and every weight of at least 1/65536 of the total gets its slots.
    """
    w = np.asarray(weights, dtype=np.float64)
    cum = np.cumsum(w / w.sum())
    slots = (np.arange(_RESOLUTION) + 0.5) / _RESOLUTION
    return np.minimum(np.searchsorted(cum, slots), len(w) - 1).astype(np.int32)


def draw(rng: np.random.Generator, weights: list[float] | np.ndarray, size: int) -> np.ndarray:
    """Indices drawn with the given relative weights."""
    return sampling_table(weights)[rng.integers(0, _RESOLUTION, size)].astype(np.int64)


def _parse_day(value: str | date, name: str) -> np.datetime64:
    try:
        return np.datetime64(value, "D")
    except (ValueError, TypeError):
        raise InputError(f"{name}={value!r} is not a date; give it as YYYY-MM-DD") from None


class Window:
    """The days covered by the sample and how busy each one is."""

    def __init__(self, start: str | date, end: str | date) -> None:
        self.first_day = _parse_day(start, "start")
        last_day = _parse_day(end, "end")
        if last_day < self.first_day:
            raise InputError(f"end={str(last_day)!r} is before start={str(self.first_day)!r}")
        days = np.arange(self.first_day, last_day + 1, dtype="datetime64[D]")
        self.n_days = len(days)
        self.end_s = self.n_days * DAY
        month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
        dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday

        def on(m: int, lo: int, hi: int | None = None) -> np.ndarray:
            return (month == m) & (dom >= lo) & (dom <= (lo if hi is None else hi))

        season = np.asarray(vocab.WEEKDAYS)[weekday]
        season = season * np.select(
            [on(11, 11), on(11, 12, 13), on(11, 1, 10), on(6, 18), on(6, 1, 17), on(12, 12)],
            [5.0, 1.6, 1.4, 3.5, 1.3, 2.0],
            1.0,
        )
        years = days.astype("datetime64[Y]").astype(np.int64) + 1970
        for year in np.unique(years).tolist():
            if year in vocab.SPRING_FESTIVAL:
                offset = (days - np.datetime64(vocab.SPRING_FESTIVAL[year])).astype(np.int64)
                before, during = (offset >= -21) & (offset < -7), np.abs(offset) <= 7
                season = season * np.select(
                    [before, during, (offset > 7) & (offset <= 14)],
                    [1.2, 0.45, 0.8],
                    1.0,
                )
        self.season = season
        self.cum = np.concatenate([[0.0], np.cumsum(season)])
        self.double11 = on(11, 11)
        self.promo = on(11, 10, 12) | on(6, 16, 18) | on(12, 12)

    def clock(self, days: np.ndarray) -> np.ndarray:
        """Seasonal time elapsed at ``days`` (fractional days since the start)."""
        days = np.clip(days, 0.0, self.n_days)
        whole = np.minimum(np.floor(days).astype(np.int64), self.n_days - 1)
        return self.cum[whole] + (days - whole) * self.season[whole]

    def day_at(self, clock: np.ndarray) -> np.ndarray:
        """The day (integer) at which the seasonal clock reads ``clock``."""
        day = np.searchsorted(self.cum, clock, side="right") - 1
        return np.clip(day, 0, self.n_days - 1)

    def moments(self, rng: np.random.Generator, day: np.ndarray) -> np.ndarray:
        """A time of day for each day, by the hourly profile (midnight rush on Double 11)."""
        normal = draw(rng, vocab.HOURS, len(day))
        rush = draw(rng, vocab.HOURS_DOUBLE11, len(day))
        hour = np.where(self.double11[day], rush, normal)
        return day * DAY + hour * 3600 + rng.integers(0, 3600, len(day))


@dataclass(frozen=True)
class Catalog:
    """Products, sorted by category; the same for every seed."""

    stock_code: list[str]
    description: list[str]
    category: np.ndarray  # index into vocab.CATEGORIES
    price_cents: np.ndarray  # list price; index + n is the promotion price
    promo_cents: np.ndarray
    table: np.ndarray  # per category, the sampling table of its products (global indices)

    @property
    def n(self) -> int:
        return len(self.stock_code)

    def pick(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """A product of each given category, by popularity."""
        slot = rng.integers(0, _RESOLUTION, len(category))
        return self.table.ravel()[category * _RESOLUTION + slot].astype(np.int64)


def build_catalog() -> Catalog:
    rng = np.random.default_rng(618)
    codes, names, cats, prices, tables = [], [], [], [], []
    for c, (_, median, spread, _, items) in enumerate(vocab.CATEGORIES):
        start = len(codes)
        for i, item in enumerate(items):
            for v, variant in enumerate(rng.choice(len(vocab.VARIANTS), 3, replace=False)):
                codes.append(f"{20000 + 1000 * c + 37 * i}{'' if v == 0 else 'AB'[v - 1]}")
                names.append(f"{item} {vocab.VARIANTS[variant]}")
                cats.append(c)
                yuan = median * np.exp(spread * rng.standard_normal())
                yuan = max(np.round(yuan / 10) * 10, 10) - 0.1 if yuan >= 20 else round(yuan) + 0.9
                prices.append(round(yuan * 100))
        popularity = 1 / (rng.permutation(len(codes) - start) + 1.0) ** 0.8  # Zipf-like
        tables.append(start + sampling_table(popularity))
    price = np.asarray(prices, dtype=np.int64)
    return Catalog(
        stock_code=codes,
        description=names,
        category=np.asarray(cats, dtype=np.int64),
        price_cents=price,
        promo_cents=np.round(price * 0.085).astype(np.int64) * 10,
        table=np.stack(tables),
    )


# Category affinity by gender (女, 男), multiplying the category popularity.
_AFFINITY = np.array(
    [
        [1.3, 1.8, 0.6, 1.1, 1.0, 1.5, 0.7, 1.0],
        [0.8, 0.3, 2.0, 0.9, 1.0, 0.6, 1.6, 1.1],
    ]
)
# Log shift of the median order value by age band.
_AGE_SPEND = np.array([-0.25, 0.0, 0.15, 0.10, -0.05])


@dataclass(frozen=True)
class Population:
    """Who the customers are and how they behave; one entry per customer."""

    reg_s: np.ndarray  # registration time
    death_s: np.ndarray  # end of the customer's active life (float; may lie past the window)
    propensity: np.ndarray  # relative purchase rate, Gamma(0.55) with mean 1
    spend_mu: np.ndarray  # log of the customer's median order value in yuan
    fav_cat: np.ndarray  # favourite category
    gender: np.ndarray  # index into vocab.GENDERS
    age_band: np.ndarray  # index into vocab.AGE_BANDS
    channel: np.ndarray  # acquisition channel, index into vocab.CHANNELS

    @property
    def n(self) -> int:
        return len(self.reg_s)


def simulate_population(rng: np.random.Generator, n: int, window: Window) -> Population:
    growth = 1.0 + np.arange(window.n_days) / window.n_days  # twice the intake at the end
    reg_day = draw(rng, growth * np.sqrt(window.season), n)
    reg_s = window.moments(rng, reg_day)
    dropout_rate = rng.gamma(1.2, 1 / 500, n)  # per day
    death_s = reg_s + rng.exponential(1.0, n) / dropout_rate * DAY
    gender = draw(rng, [w for _, w in vocab.GENDERS], n)
    age_band = draw(rng, [b[1] for b in vocab.AGE_BANDS], n)
    popularity = np.array([c[3] for c in vocab.CATEGORIES])
    fav_cat = np.where(
        gender == 0,
        draw(rng, popularity * _AFFINITY[0], n),
        draw(rng, popularity * _AFFINITY[1], n),
    )
    return Population(
        reg_s=reg_s,
        death_s=death_s,
        propensity=rng.gamma(0.55, 1 / 0.55, n),
        spend_mu=np.log(150.0) + _AGE_SPEND[age_band] + 0.45 * rng.standard_normal(n),
        fav_cat=fav_cat,
        gender=gender,
        age_band=age_band,
        channel=draw(rng, [w for _, w in vocab.CHANNELS], n),
    )


@dataclass(frozen=True)
class Purchases:
    """Invoices and their lines, in time order (invoice index = chronological rank).

    A cancellation is an invoice of its own, later than the one it cancels
    (``cancel_of`` >= 0), whose lines repeat that invoice's lines with negative quantities.
    """

    inv_cust: np.ndarray
    inv_time: np.ndarray
    cancel_of: np.ndarray  # -1 for a purchase, else the index of the cancelled invoice
    line_inv: np.ndarray  # sorted
    line_product: np.ndarray
    line_qty: np.ndarray
    line_promo: np.ndarray  # bool: sold at the promotion price
    repeat_rate: np.ndarray  # per customer: repeat purchases per seasonal day
    span: np.ndarray  # per customer: seasonal days between registration and dropout or end

    @property
    def n_invoices(self) -> int:
        return len(self.inv_time)

    def first_line(self) -> np.ndarray:
        """The index of each invoice's first line."""
        lines = np.bincount(self.line_inv, minlength=self.n_invoices)
        return np.cumsum(lines) - lines


def simulate_purchases(
    rng: np.random.Generator,
    pop: Population,
    window: Window,
    catalog: Catalog,
    lines_per_customer: float,
) -> Purchases:
    n, end = pop.n, window.end_s
    # the first purchase, right after registering
    # (fewer when lines_per_customer asks for fewer invoices than that alone would make)
    invoices = n * lines_per_customer / _LINES_PER_INVOICE
    share = min(FIRST_PURCHASE_SHARE, 0.9 * invoices / n)
    first_t = pop.reg_s + (rng.exponential(0.4, n) * DAY).astype(np.int64)
    has_first = (rng.random(n) < share) & (first_t < pop.death_s) & (first_t < end)
    # repeat purchases: Poisson on the seasonal clock until dropout; the rate is scaled so that
    # the expected number of lines matches lines_per_customer
    clock_a = window.clock(pop.reg_s / DAY)
    span = np.maximum(window.clock(np.minimum(pop.death_s / DAY, window.n_days)) - clock_a, 0.0)
    wanted = max(invoices - has_first.sum(), 0.0)
    exposure = float((pop.propensity * span).sum())
    rate = pop.propensity * (wanted / exposure if exposure > 0 else 0.0)
    who = np.repeat(np.arange(n), rng.poisson(rate * span))
    day = window.day_at(clock_a[who] + rng.random(len(who)) * span[who])
    repeat_t = np.clip(window.moments(rng, day), pop.reg_s[who] + 60, end - 1)
    cust = np.concatenate([np.flatnonzero(has_first), who])
    time = np.concatenate([first_t[has_first], repeat_t]).astype(np.int64)
    chronological = stable_order(time)
    cust, time = cust[chronological], time[chronological]
    n_buy = len(cust)

    # lines: a favourite-category product or a popular one; a product drawn twice is one line
    lines_drawn = 1 + rng.poisson(EXTRA_LINES_MEAN, n_buy)
    line_inv = np.repeat(np.arange(n_buy), lines_drawn)
    popularity = [c[3] for c in vocab.CATEGORIES]
    category = np.where(
        rng.random(len(line_inv)) < 0.55,
        pop.fav_cat[cust[line_inv]],
        draw(rng, popularity, len(line_inv)),
    )
    # lines are grouped by invoice already, so this sort only orders each invoice's products
    key = np.sort(line_inv * catalog.n + catalog.pick(rng, category), kind="stable")
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    line_inv, product = key // catalog.n, key % catalog.n
    n_lines = np.bincount(line_inv, minlength=n_buy)
    first_line = np.cumsum(n_lines) - n_lines
    position = np.arange(len(line_inv)) - first_line[line_inv]

    # quantities: the order's budget, shared among its lines, over the unit price; people buy
    # more of cheap things, but not proportionally more (square root), and at most 12
    value = np.exp(pop.spend_mu[cust] + 0.6 * rng.standard_normal(n_buy))
    promo = window.promo[time // DAY][line_inv]
    cents = np.where(promo, catalog.promo_cents[product], catalog.price_cents[product])
    share = value[line_inv] / n_lines[line_inv] * 100 / cents
    noise = np.exp(0.25 * rng.standard_normal(len(line_inv)))
    qty = np.clip(np.rint(np.sqrt(share) * noise), 1, 12).astype(np.int64)

    # cancellations: the whole invoice or its first line, up to ten days later
    k = round(CANCEL_SHARE * n_buy)
    cancelled = np.sort(rng.choice(n_buy, k, replace=False))
    late = (rng.uniform(0.05, 10.0, k) * DAY).astype(np.int64)
    cancel_t = np.maximum(np.minimum(time[cancelled] + late, end - 1), time[cancelled])
    whole = rng.random(k) < 0.5
    by_time = np.lexsort((cancelled, cancel_t))
    cancelled, cancel_t, whole = cancelled[by_time], cancel_t[by_time], whole[by_time]

    # merge the cancellations into the time order: a cancellation goes after every purchase
    # up to its second (so always after the invoice it cancels)
    before = np.searchsorted(time, cancel_t, side="right")
    at_cancel = before + np.arange(k)
    at_buy = np.arange(n_buy) + np.cumsum(np.bincount(before, minlength=n_buy + 1))[:n_buy]
    n_inv = n_buy + k
    inv_cust = np.empty(n_inv, dtype=np.int64)
    inv_cust[at_buy], inv_cust[at_cancel] = cust, cust[cancelled]
    inv_time = np.empty(n_inv, dtype=np.int64)
    inv_time[at_buy], inv_time[at_cancel] = time, cancel_t
    cancel_of = np.full(n_inv, -1, dtype=np.int64)
    cancel_of[at_cancel] = at_buy[cancelled]

    # lines of the merged invoices, each put straight into its place (no sort)
    cancel_lines = np.where(whole, n_lines[cancelled], 1)
    counts = np.empty(n_inv, dtype=np.int64)
    counts[at_buy], counts[at_cancel] = n_lines, cancel_lines
    starts = np.cumsum(counts) - counts
    of_cancel = np.repeat(np.arange(k), cancel_lines)
    cancel_pos = np.arange(len(of_cancel)) - (np.cumsum(cancel_lines) - cancel_lines)[of_cancel]
    source = first_line[cancelled[of_cancel]] + cancel_pos
    buy_dest = starts[at_buy[line_inv]] + position
    cancel_dest = starts[at_cancel[of_cancel]] + cancel_pos

    def placed(bought: np.ndarray, returned: np.ndarray) -> np.ndarray:
        out = np.empty(len(bought) + len(returned), dtype=bought.dtype)
        out[buy_dest], out[cancel_dest] = bought, returned
        return out

    return Purchases(
        inv_cust=inv_cust,
        inv_time=inv_time,
        cancel_of=cancel_of,
        line_inv=np.repeat(np.arange(n_inv), counts),
        line_product=placed(product, product[source]),
        line_qty=placed(qty, -qty[source]),
        line_promo=placed(promo, promo[source]),
        repeat_rate=rate,
        span=span,
    )
