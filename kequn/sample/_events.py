"""The events table: behaviour that goes with the purchases, and browsing that does not.

* Before each purchase: a search (35%), a view of the first product bought, then adding it to
  the cart; a coupon used at checkout (12%, 45% on festival days).
* After a purchase: a support ticket (3%) within ten days, while the customer is active;
  before a cancellation, a ticket about the return (60%).
* Browsing sessions without a purchase, a Poisson process on the seasonal clock from
  registration to dropout (rate 0.3 x the customer's repeat purchase rate + one per 150
  seasonal days): a page view, a product view (60%), an abandoned cart (15% of those).
* A referral (5% of customers) at some time while active.

Nothing happens before a customer registers; browsing, referrals and tickets after a purchase
stop at the customer's dropout, so churned customers go quiet.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kequn.sample import _vocab as vocab
from kequn.sample._format import DAY, coded, format_ids, format_times, join, stable_order
from kequn.sample._process import Catalog, Population, Purchases, Window, draw

EVENT_COLUMNS = ["event_id", "customer_id", "occurred_at", "type", "properties"]
EVENT_TYPES = [
    "page_view", "product_view", "add_to_cart", "coupon_use", "support_ticket", "referral",
    "search",
]  # fmt: skip
PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, COUPON_USE, SUPPORT_TICKET, REFERRAL, SEARCH = range(7)
COUPONS = ["FULL-99-10", "FULL-199-20", "VIP-10", "NEW-20"]
FESTIVAL_COUPONS = {6: "618-200-30", 11: "DOUBLE11-300-50", 12: "DOUBLE12-100-12"}


def _json_lookup(objects: list[dict]) -> pa.Array:
    return pa.array([json.dumps(o, ensure_ascii=False) for o in objects], pa.string())


class _Events:
    """Events gathered part by part: customer, time, type and an index into the properties
    texts (shared ones such as a product view's, or one per event); sorted at the end."""

    def __init__(self) -> None:
        self.cust: list[np.ndarray] = []
        self.time: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.prop: list[np.ndarray] = []
        self.texts: list[pa.Array] = []
        self.n_texts = 0

    def texts_of(self, texts: pa.Array) -> int:
        """Add property texts; returns the index of the first."""
        self.texts.append(texts)
        self.n_texts += len(texts)
        return self.n_texts - len(texts)

    def add(self, cust: np.ndarray, time: np.ndarray, kind: int, prop: np.ndarray) -> None:
        self.cust.append(cust)
        self.time.append(np.asarray(time, dtype=np.int64))
        self.kind.append(np.full(len(cust), kind, dtype=np.int8))
        self.prop.append(np.asarray(prop, dtype=np.int64))

    def add_own(self, cust: np.ndarray, time: np.ndarray, kind: int, texts: pa.Array) -> None:
        """Events whose properties are their own (one text each)."""
        self.add(cust, time, kind, self.texts_of(texts) + np.arange(len(texts)))

    def table(self, customer_ids: pa.Array, window: Window) -> pa.Table:
        time = np.concatenate(self.time)
        kind = np.concatenate(self.kind)
        # time order; within a second the natural order of a visit (search, view, cart, …)
        rank = np.array([1, 2, 3, 4, 5, 6, 0], dtype=np.int64)[kind]
        order = stable_order(time * 8 + rank)
        n = len(order)
        return pa.table(
            [
                format_ids(np.arange(1, n + 1), "E", max(8, len(str(n)))),
                coded(np.concatenate(self.cust)[order], customer_ids, unique=True),
                format_times(time[order], window.first_day, "iso"),
                coded(kind[order], EVENT_TYPES, unique=True),
                coded(np.concatenate(self.prop)[order], pa.concat_arrays(self.texts)),
            ],
            names=EVENT_COLUMNS,
        )


def _before(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float, floor: np.ndarray):
    """Times ``lo``–``hi`` seconds before ``t``, never before ``floor``."""
    return np.maximum(t - rng.integers(int(lo), int(hi), len(t)), floor)


def build_events(
    rng: np.random.Generator,
    purchases: Purchases,
    pop: Population,
    window: Window,
    catalog: Catalog,
    customer_ids: pa.Array,
    inv_no: pa.Array,
) -> pa.Table:
    p, ev, end = purchases, _Events(), window.end_s
    categories = [c[0] for c in vocab.CATEGORIES]
    codes = catalog.stock_code
    product_view = ev.texts_of(
        _json_lookup(
            [
                {"product_id": s, "category": categories[c], "page": f"/item/{s}"}
                for s, c in zip(codes, catalog.category.tolist(), strict=True)
            ]
        )
    )
    max_qty = int(p.line_qty.max(initial=1))
    cart = ev.texts_of(
        _json_lookup(
            [
                {"product_id": s, "category": categories[c], "quantity": q}
                for s, c in zip(codes, catalog.category.tolist(), strict=True)
                for q in range(1, max_qty + 1)
            ]
        )
    )

    def add_to_cart(product: np.ndarray, qty: np.ndarray) -> np.ndarray:
        return cart + product * max_qty + qty - 1

    queries = [q for c in categories for q in vocab.SEARCH_QUERIES[c]]
    per_cat = len(vocab.SEARCH_QUERIES[categories[0]])
    search = ev.texts_of(_json_lookup([{"query": q, "page": "/search"} for q in queries]))

    # around each purchase
    buy = np.flatnonzero(p.cancel_of < 0)
    first = p.first_line()[buy]
    product, qty = p.line_product[first], p.line_qty[first]
    cust, t = p.inv_cust[buy], p.inv_time[buy]
    reg = pop.reg_s[cust]
    s = rng.random(len(buy)) < 0.35
    query = catalog.category[product[s]] * per_cat + rng.integers(0, per_cat, s.sum())
    ev.add(cust[s], _before(rng, t[s], 3600, 7200, reg[s]), SEARCH, search + query)
    ev.add(cust, _before(rng, t, 180, 3600, reg), PRODUCT_VIEW, product_view + product)
    ev.add(cust, _before(rng, t, 30, 180, reg), ADD_TO_CART, add_to_cart(product, qty))
    day = t // DAY
    festival = window.promo[day]
    c = rng.random(len(buy)) < np.where(festival, 0.45, 0.12)
    month = (window.first_day + day[c]).astype("datetime64[M]").astype(np.int64) % 12 + 1
    code_list = COUPONS + [FESTIVAL_COUPONS[m] for m in sorted(FESTIVAL_COUPONS)]
    festival_code = np.select([month == m for m in sorted(FESTIVAL_COUPONS)], [4, 5, 6], 0)
    code = np.where(festival[c], festival_code, rng.integers(0, len(COUPONS), c.sum()))
    coupon = join(
        '{"coupon": "', pc.take(pa.array(code_list), pa.array(code)), '", "order_id": "',
        pc.take(inv_no, pa.array(buy[c])), '"}',
    )  # fmt: skip
    ev.add_own(cust[c], np.maximum(t[c] - 5, reg[c]), COUPON_USE, coupon)

    def ticket(order: np.ndarray, topic: np.ndarray) -> pa.Array:
        return join(
            '{"topic": "', pc.take(pa.array(vocab.SUPPORT_TOPICS), pa.array(topic)),
            '", "order_id": "', pc.take(inv_no, pa.array(order)), '"}',
        )  # fmt: skip

    k = np.flatnonzero(rng.random(len(buy)) < 0.03)
    later = t[k] + rng.integers(DAY, 10 * DAY, len(k))
    active = (later < pop.death_s[cust[k]]) & (later < end)
    k, later = k[active], later[active]
    topic = rng.integers(0, len(vocab.SUPPORT_TOPICS), len(k))
    ev.add_own(cust[k], later, SUPPORT_TICKET, ticket(buy[k], topic))

    # before a cancellation, a ticket about the return
    back = np.flatnonzero(p.cancel_of >= 0)
    back = back[rng.random(len(back)) < 0.6]
    t_back, t_bought = p.inv_time[back], p.inv_time[p.cancel_of[back]]
    when = t_back - (rng.random(len(back)) * np.minimum(t_back - t_bought, DAY)).astype(np.int64)
    topic = np.full(len(back), vocab.SUPPORT_TOPICS.index("退换货"))
    ev.add_own(p.inv_cust[back], when, SUPPORT_TICKET, ticket(p.cancel_of[back], topic))

    # browsing sessions while active
    clock_at_reg = window.clock(pop.reg_s / DAY)
    rate = 0.3 * p.repeat_rate + 1 / 150
    who = np.repeat(np.arange(pop.n), rng.poisson(rate * p.span))
    day = window.day_at(clock_at_reg[who] + rng.random(len(who)) * p.span[who])
    start = np.clip(window.moments(rng, day), pop.reg_s[who] + 60, end - 1)
    stop = np.minimum(pop.death_s[who], end)
    active = start < stop
    who, start, stop = who[active], start[active], stop[active]
    pages = ev.texts_of(_json_lookup([{"page": page} for page in vocab.PAGES]))
    ev.add(who, start, PAGE_VIEW, pages + rng.integers(0, len(vocab.PAGES), len(who)))
    v = np.flatnonzero(rng.random(len(who)) < 0.6)
    v_time = start[v] + rng.integers(20, 300, len(v))
    popularity = [c[3] for c in vocab.CATEGORIES]
    liked = rng.random(len(v)) < 0.6
    category = np.where(liked, pop.fav_cat[who[v]], draw(rng, popularity, len(v)))
    v_product = catalog.pick(rng, category)
    active = v_time < stop[v]
    v, v_time, v_product = v[active], v_time[active], v_product[active]
    ev.add(who[v], v_time, PRODUCT_VIEW, product_view + v_product)
    a = np.flatnonzero(rng.random(len(v)) < 0.15)
    a_time = v_time[a] + rng.integers(60, 600, len(a))
    active = a_time < stop[v[a]]
    a, a_time = a[active], a_time[active]
    one = np.ones(len(a), dtype=np.int64)
    ev.add(who[v[a]], a_time, ADD_TO_CART, add_to_cart(v_product[a], one))

    # referrals
    r = np.flatnonzero((rng.random(pop.n) < 0.05) & (p.span > 0))
    day = window.day_at(clock_at_reg[r] + rng.random(len(r)) * p.span[r])
    when = np.clip(window.moments(rng, day), pop.reg_s[r] + 60, end - 1)
    active = when < pop.death_s[r]
    r, when = r[active], when[active]
    channel = pc.take(
        pa.array(vocab.REFERRAL_CHANNELS), rng.integers(0, len(vocab.REFERRAL_CHANNELS), len(r))
    )
    referral = join('{"channel": "', channel, '", "code": "', format_ids(r + 1, "RF", 6), '"}')
    ev.add_own(r, when, REFERRAL, referral)
    return ev.table(customer_ids, window)
