"""People: the customers table (GBK, Chinese headers) and the loyalty members table.

Names, e-mail addresses and phone numbers are drawn for one pool of people: the customers,
the members who are not customers, and spare contact details for members who are customers
but gave the loyalty programme a different phone or address. Phones and addresses are unique
across the pool, so the only way a member matches a customer is the way it was made to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kequn.sample import _vocab as vocab
from kequn.sample._format import format_ids, format_times, ints_to_text, join
from kequn.sample._process import Population, Window, draw

# How people write a mobile number: 13800138000, 138 0013 8000, 138-0013-8000,
# +86 13800138000, +86 138 0013 8000, +86-138-0013-8000, 8613800138000, (+86)13800138000,
# 0086-13800138000; with these relative weights.
PHONE_STYLE_WEIGHTS = [0.50, 0.10, 0.10, 0.10, 0.06, 0.05, 0.04, 0.03, 0.02]
CUSTOMER_PHONE_MISSING = 0.05
CUSTOMER_EMAIL_MISSING = 0.12
MEMBER_SHARE = 0.4  # members per customer, by default
MEMBER_OVERLAP = 0.30  # share of members who are also customers
# how a member who is a customer matches: by phone only, by e-mail only, by both
MATCH_KIND_WEIGHTS = [0.45, 0.35, 0.20]

CUSTOMER_COLUMNS = [
    "客户ID", "姓名", "英文名", "性别", "年龄段", "城市", "省份", "注册渠道", "邮箱", "手机号",
    "注册时间",
]  # fmt: skip
MEMBER_COLUMNS = ["会员编号", "手机号", "邮箱", "会员等级", "积分"]


def unique_ints(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """``n`` distinct integers in ``[0, high)``, in random order."""
    return rng.choice(high, n, replace=False).astype(np.int64)


def format_phones(digits: np.ndarray, style: np.ndarray) -> pa.Array:
    """Eleven-digit mobile numbers written in the given styles (see PHONE_STYLE_WEIGHTS)."""
    s = ints_to_text(digits)
    a = pc.utf8_slice_codeunits(s, 0, 3)
    b = pc.utf8_slice_codeunits(s, 3, 7)
    c = pc.utf8_slice_codeunits(s, 7, 11)
    spaced, dashed = join(a, " ", b, " ", c), join(a, "-", b, "-", c)
    styles = [
        s, spaced, dashed, join("+86 ", s), join("+86 ", spaced), join("+86-", dashed),
        join("86", s), join("(+86)", s), join("0086-", s),
    ]  # fmt: skip
    return pc.choose(pa.array(style, pa.int8()), *styles)


def _take(values: list[str], index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values), pa.array(index))


def _null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), values)


@dataclass(frozen=True)
class People:
    name: pa.Array
    english: pa.Array
    local: pa.Array  # e-mail local part
    domain: pa.Array
    phone: np.ndarray  # eleven digits

    @property
    def email(self) -> pa.Array:
        return join(self.local, "@", self.domain)


def make_people(
    rng: np.random.Generator, gender: np.ndarray, age_band: np.ndarray, year: int
) -> People:
    n = len(gender)
    male = gender == 1
    surname = draw(rng, [w for _, _, w in vocab.SURNAMES], n)
    chars = vocab.GIVEN_FEMALE + vocab.GIVEN_MALE + [("", "")]
    n_f, n_m = len(vocab.GIVEN_FEMALE), len(vocab.GIVEN_MALE)

    def given_char() -> np.ndarray:
        return np.where(male, n_f + rng.integers(0, n_m, n), rng.integers(0, n_f, n))

    g1 = given_char()
    g2 = np.where(rng.random(n) < 0.65, given_char(), len(chars) - 1)
    name = join(
        _take([s for s, _, _ in vocab.SURNAMES], surname),
        _take([c for c, _ in chars], g1),
        _take([c for c, _ in chars], g2),
    )
    sur_py = _take([p for _, p, _ in vocab.SURNAMES], surname)
    given_py = join(_take([p for _, p in chars], g1), _take([p for _, p in chars], g2))
    english_given = _take(
        vocab.ENGLISH_FEMALE + vocab.ENGLISH_MALE,
        np.where(
            male,
            len(vocab.ENGLISH_FEMALE) + rng.integers(0, len(vocab.ENGLISH_MALE), n),
            rng.integers(0, len(vocab.ENGLISH_FEMALE), n),
        ),
    )
    sur_cap, given_cap = pc.utf8_capitalize(sur_py), pc.utf8_capitalize(given_py)
    english = pc.choose(
        pa.array(draw(rng, [0.55, 0.35, 0.10], n), pa.int8()),
        join(given_cap, " ", sur_cap),  # Wei Zhang
        join(english_given, " ", sur_cap),  # Kevin Zhang
        join(pc.utf8_upper(sur_py), " ", given_cap),  # ZHANG Wei, as in a passport
    )

    bands = np.array([(lo, hi) for _, _, lo, hi in vocab.AGE_BANDS])
    age = rng.integers(bands[age_band, 0], bands[age_band, 1] + 1)
    domain = draw(rng, [w for _, w in vocab.EMAIL_DOMAINS], n)
    qq = ints_to_text(10_000 + unique_ints(rng, n, 3_000_000_000))
    english_lower = pc.utf8_lower(english_given)
    styled = pc.choose(
        pa.array(draw(rng, [0.25, 0.15, 0.25, 0.15, 0.20], n), pa.int8()),
        join(sur_py, given_py),  # zhangwei
        join(given_py, ".", sur_py),  # wei.zhang
        join(sur_py, given_py, ints_to_text(year - age)),  # zhangwei1990
        join(english_lower, "_", sur_py),  # kevin_zhang
        join(sur_py, given_py, ints_to_text(rng.integers(1, 1000, n))),  # zhangwei88
    )
    local = pc.if_else(pa.array(domain == 0), qq, styled)  # qq.com: the QQ number
    domains = _take([d for d, _ in vocab.EMAIL_DOMAINS], domain)
    # the same address drawn twice: the second holder adds _2, the third _3, … (no address
    # drawn ends in _ and digits, so the result is unique)
    codes = pc.dictionary_encode(join(local, "@", domains)).indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    repeat = occurrence > 0
    if repeat.any():
        renamed = join(local, "_", ints_to_text(occurrence + 1))
        local = pc.if_else(pa.array(repeat), renamed, local)

    where = unique_ints(rng, n, len(vocab.MOBILE_PREFIXES) * 100_000_000)
    prefix = np.asarray(vocab.MOBILE_PREFIXES, dtype=np.int64)[where // 100_000_000]
    return People(
        name=name,
        english=english,
        local=local,
        domain=domains,
        phone=prefix * 100_000_000 + where % 100_000_000,
    )


def customer_ids(n: int) -> pa.Array:
    """C000001, C000002, … (wider when there are a million customers or more)."""
    return format_ids(np.arange(1, n + 1), "C", max(6, len(str(n))))


def build_people(
    rng: np.random.Generator,
    pop: Population,
    window: Window,
    spend: np.ndarray,
    n_members: int,
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """The customers table, the members table and the members' overlap counts.

    ``spend`` is each customer's net purchase value in yuan (members' points follow it).
    """
    n = pop.n
    phone_style = draw(rng, PHONE_STYLE_WEIGHTS, n)
    has_phone = rng.random(n) >= CUSTOMER_PHONE_MISSING
    has_email = rng.random(n) >= CUSTOMER_EMAIL_MISSING

    # members who are customers, and how each matches
    eligible = np.flatnonzero(has_phone & has_email)
    n_match = min(round(MEMBER_OVERLAP * n_members), len(eligible))
    n_new = n_members - n_match
    matched = np.sort(rng.choice(eligible, n_match, replace=False))
    kind = draw(rng, MATCH_KIND_WEIGHTS, n_match)  # 0 phone, 1 e-mail, 2 both

    # one pool: customers, then new members, then spare contacts of matched members
    extra = n_new + n_match
    gender = np.concatenate([pop.gender, draw(rng, [w for _, w in vocab.GENDERS], extra)])
    age_band = np.concatenate([pop.age_band, draw(rng, [b[1] for b in vocab.AGE_BANDS], extra)])
    year = int(str(window.first_day + window.n_days - 1)[:4])
    people = make_people(rng, gender, age_band, year)
    email = people.email

    city = draw(rng, [w for _, _, w in vocab.CITIES], n)
    customers = pa.table(
        [
            customer_ids(n),
            people.name.slice(0, n),
            people.english.slice(0, n),
            _take([g for g, _ in vocab.GENDERS], pop.gender),
            _take([b[0] for b in vocab.AGE_BANDS], pop.age_band),
            _take([c for c, _, _ in vocab.CITIES], city),
            _take([p for _, p, _ in vocab.CITIES], city),
            _take([c for c, _ in vocab.CHANNELS], pop.channel),
            _null_where(email.slice(0, n), ~has_email),
            _null_where(format_phones(people.phone[:n], phone_style), ~has_phone),
            format_times(pop.reg_s, window.first_day, "sql"),
        ],
        names=CUSTOMER_COLUMNS,
    )

    # members: matched ones first, then new people; shuffled by membership number below
    spare = n + n_new + np.arange(n_match)
    styles = len(PHONE_STYLE_WEIGHTS)
    other_style = (phone_style[matched] + rng.integers(1, styles, n_match)) % styles
    by_phone, by_email = kind != 1, kind != 0
    spare_phone = rng.random(n_match) < 0.5  # a matched-by-e-mail member's phone: new or none
    spare_email = rng.random(n_match) < 0.4  # a matched-by-phone member's e-mail: new or none
    m_phone_digits = np.concatenate(
        [
            np.where(by_phone, people.phone[matched], people.phone[spare]),
            people.phone[n : n + n_new],
        ]
    )
    m_phone_style = np.concatenate([other_style, draw(rng, PHONE_STYLE_WEIGHTS, n_new)])
    m_has_phone = np.concatenate([by_phone | spare_phone, rng.random(n_new) >= 0.03])
    shouting = pa.array(rng.random(n_match) < 0.5)  # e-mail in capitals, or Capitalised@UPPER
    local, domain = people.local.take(pa.array(matched)), people.domain.take(pa.array(matched))
    recased = pc.if_else(
        shouting,
        pc.utf8_upper(join(local, "@", domain)),
        join(pc.utf8_capitalize(local), "@", pc.utf8_upper(domain)),
    )
    m_email = pa.concat_arrays(
        [
            pc.if_else(pa.array(by_email), recased, email.take(pa.array(spare))),
            email.slice(n, n_new),
        ]
    )
    m_has_email = np.concatenate([by_email | spare_email, rng.random(n_new) >= 0.3])
    points = np.concatenate(
        [
            np.rint(np.maximum(spend[matched], 0) * rng.uniform(0.6, 1.0, n_match)),
            np.rint(rng.lognormal(6.0, 1.3, n_new)),
        ]
    ).astype(np.int64)
    thresholds = np.array([t for _, t in vocab.MEMBER_LEVELS])
    level = np.searchsorted(thresholds, points, side="right") - 1
    number = rng.permutation(n_members) + 1
    members = pa.table(
        [
            format_ids(number, "M", 8),
            _null_where(format_phones(m_phone_digits, m_phone_style), ~m_has_phone),
            _null_where(m_email, ~m_has_email),
            _take([lv for lv, _ in vocab.MEMBER_LEVELS], level),
            pa.array(points),
        ],
        names=MEMBER_COLUMNS,
    ).take(pa.array(np.argsort(number)))
    overlap = {
        "members": n_members,
        "customers_among_members": n_match,
        "matched_by_phone_only": int((kind == 0).sum()),
        "matched_by_email_only": int((kind == 1).sum()),
        "matched_by_phone_and_email": int((kind == 2).sum()),
        "new_people": n_new,
    }
    return customers, members, overlap
