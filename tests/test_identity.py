"""Identity merge across sources on normalised e-mail and phone."""

from __future__ import annotations

from conftest import rows
from hypothesis import given
from hypothesis import strategies as st

from kequn.ingest import import_files
from kequn.ingest.parse import phone_norm, quote_str


def test_merge_across_two_sources(ws, write):
    crm = write(
        "crm.csv",
        "客户ID,姓名,邮箱,手机号\n"
        "C1,张三,ZS@Example.com,13800138000\n"
        "C2,李四,li@example.com,\n"
        "C3,王五,,13700137000\n",
    )
    shop = write(
        "shop.csv",
        "会员编号,手机号,邮箱,积分\n"
        "M1,+86 138-0013-8000,,100\n"  # same phone as C1, other format
        "M2,,Li@Example.COM ,5\n"  # same e-mail as C2, other case and spaces
        "M3,0086 13600136000,,7\n"  # a new person
        "M4,136-0013-6000,m4@x.com,1\n",  # same phone as M3: one new person
    )
    import_files(ws, "customers", [crm], source="crm")
    report = import_files(ws, "customers", [shop], source="shop")
    assert report.customers_new == 1
    assert report.customers_merged_by == {"phone": 2, "email": 1}
    got = dict(rows(ws, "SELECT source || ':' || source_id, customer_id FROM identities"))
    assert got == {
        "crm:C1": "C1",
        "crm:C2": "C2",
        "crm:C3": "C3",
        "shop:M1": "C1",
        "shop:M2": "C2",
        "shop:M3": "M3",
        "shop:M4": "M3",
    }
    # the profile is unified: attributes of both sources on one customer
    attrs = rows(ws, "SELECT attributes FROM customers WHERE customer_id = 'C1'")[0][0]
    assert '"积分":"100"' in attrs
    assert rows(ws, "SELECT count(*) FROM customers") == [(4,)]


def test_orders_of_a_second_source_join_the_merged_customer(ws, write):
    import_files(ws, "customers", [write("c.csv", "id,phone\nC1,13800138000\n")], source="crm")
    import_files(
        ws, "customers", [write("m.csv", "会员编号,手机号\nM1,+8613800138000\n")], source="shop"
    )
    orders = write("o.csv", "会员编号,下单时间,金额\nM1,2024-01-01,10\n")
    import_files(ws, "orders", [orders], source="shop")
    assert rows(ws, "SELECT customer_id FROM orders") == [("C1",)]


def test_explicit_id_map_via_customer_id(ws, write):
    # an id equal to an existing customer id is that customer
    import_files(ws, "customers", [write("c.csv", "customer_id,name\nK9,赵六\n")])
    import_files(ws, "orders", [write("o.csv", "customer_id,date,amount\nK9,2024-01-01,5\n")])
    assert rows(ws, "SELECT customer_id, matched_on FROM identities ORDER BY 2") == [("K9", "new")]
    assert rows(ws, "SELECT count(*) FROM customers") == [(1,)]


@given(
    number=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    prefix=st.sampled_from(["", "+86", "+86 ", "0086", "86-", "(+86) "]),
    sep=st.sampled_from(["", " ", "-"]),
)
def test_phone_forms_normalise_to_one(number, prefix, sep):
    import duckdb

    written = prefix + number[:3] + sep + number[3:7] + sep + number[7:]
    con = duckdb.connect()
    assert con.execute("SELECT " + phone_norm(quote_str(written))).fetchall() == [(number,)]


def test_explicit_id_map(ws, write):
    from kequn.ingest.idmap import import_id_map

    import_files(ws, "customers", [write("c.csv", "customer_id,name\nC1,张三\nC2,李四\n")])
    idmap = write(
        "map.csv",
        "来源,来源ID,客户ID\n"
        "pos,CARD-9,C1\n"  # a loyalty card with no e-mail or phone
        "pos,CARD-7,C9\n"  # a customer not seen yet
        "pos,CARD-5,C1\n"
        "pos,CARD-5,C2\n"  # contradicts itself
        "pos,,C2\n",
    )
    report = import_id_map(ws, [idmap])
    assert report.added == 2 and report.customers_new == 1
    assert report.quarantined == {
        "mapped to several customers in the file": 2,
        "missing source, source_id or customer_id": 1,
    }
    orders = write("pos.csv", "customer_id,date,amount\nCARD-9,2024-01-01,5\nCARD-7,2024-01-02,6\n")
    import_files(ws, "orders", [orders], source="pos")
    assert rows(ws, "SELECT customer_id FROM orders ORDER BY 1") == [("C1",), ("C9",)]
    # a later map that contradicts what is recorded is quarantined, not applied
    again = import_id_map(ws, [write("map2.csv", "source,source_id,customer_id\npos,CARD-9,C2\n")])
    assert again.added == 0 and again.quarantined == {"already mapped to another customer": 1}
    assert rows(ws, "SELECT matched_on FROM identities WHERE source_id = 'CARD-9'") == [("id_map",)]
