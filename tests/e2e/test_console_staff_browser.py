"""Department staff work a resident's order from a phone-sized Chromium on the running stack.

A resident reports a leak by SMS; the order's first department returns it (退单) from the
staff console and it moves one hop on; the new department's staff accepts it, sends a
progress note and resolves it with a photo. The resident's SMS (the fake Twilio API)
receives every update, the last one with the rating menu.
"""
from __future__ import annotations

import re
import secrets
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.accounts import create_account
from bot.app import utc_now
from bot.community import load_community
from bot.db import session_scope
from bot.dispatch import active_lead
from bot.models import Account, Attachment, AuditEntry, Ticket, WorkOrder
from routing.catalogue import default_catalogue
from routing.roster import load_roster

pytestmark = pytest.mark.e2e

NUMBER = re.compile(r"GD\d{8}-\d{4}")
PASSWORD = "staff-e2e-2026"
PHONE = "13822220123"
SUPERVISED_PHONE = "13822220124"
PHONE_VIEW = {"width": 375, "height": 740}


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x1f\x7a\x4d")) + chunk(b"IEND", b""))


def report_leak(stack: Any, phone: str = PHONE) -> str:
    """Talk the bot through a leak report by SMS; return the order number."""
    replies = stack.say(phone, f"我家卫生间漏水了，5号楼2单元501，电话{phone}")
    heard = list(replies)
    for _ in range(4):
        found = [m.group(0) for r in replies for m in [NUMBER.search(r)] if m]
        if found:
            return found[0]
        text = " ".join(replies)
        answer = "对" if "对吗" in text else "明天上午" if "上门" in text else "对"
        replies = stack.say(phone, answer)
        heard += [f"> {answer}", *replies]
    raise AssertionError(f"no order number in {heard}")


def staff_account(stack: Any, *, department: str, staff_id: str) -> str:
    username = f"e2e-{staff_id}-{secrets.token_hex(3)}"
    with session_scope(stack.sessions) as session:
        create_account(session, username=username, password=PASSWORD, role="staff",
                       display_name=f"测试{staff_id}", department=department,
                       staff_id=staff_id, now=utc_now())
    return username


def lead_order(stack: Any, number: str) -> tuple[int, str, str | None]:
    with stack.sessions() as session:
        ticket = session.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
        lead = active_lead(ticket)
        assert lead is not None, [(o.department, o.status) for o in ticket.work_orders]
        return lead.id, lead.department, lead.assignee


def someone_in(department: str, assignee: str | None) -> str:
    if assignee:
        return assignee
    roster = load_roster(catalogue=default_catalogue(),
                         buildings=[b.number for b in load_community().buildings])
    return roster.members(department)[0].id


def sign_in(page: Any, stack: Any, username: str) -> None:
    page.goto(stack.base_url + "/console/staff")
    page.wait_for_url("**/console/login**")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#submit")
    page.wait_for_url("**/console/staff**")


def open_order(page: Any, order_id: int) -> None:
    page.locator(f'#mine [data-order="{order_id}"], #queue [data-order="{order_id}"]').click()
    page.wait_for_selector("#detail-view:not([hidden]) #summary dl")


def notice(page: Any, text: str) -> None:
    page.wait_for_function("(t) => document.getElementById('notice').textContent.includes(t)",
                           arg=text)


def wait_for_sms(stack: Any, words: str, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = stack.providers.messages_to(f"+86{PHONE}")
        if any(words in t for t in texts):
            return texts
        time.sleep(0.2)
    raise AssertionError(f"+86{PHONE} got {stack.providers.messages_to(f'+86{PHONE}')!r}")


def test_staff_return_then_accept_progress_and_resolve_with_a_photo(
        stack: Any, browser: Any, tmp_path: Path) -> None:
    number = report_leak(stack)
    first_id, first_department, first_assignee = lead_order(stack, number)
    first_staff = someone_in(first_department, first_assignee)
    first_user = staff_account(stack, department=first_department, staff_id=first_staff)

    context = browser.new_context(viewport=PHONE_VIEW, is_mobile=True, has_touch=True,
                                  locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(page, stack, first_user)
        open_order(page, first_id)
        assert number in page.inner_text("#summary")
        phone_text = page.inner_text("#phone")
        assert (PHONE in phone_text) == (first_assignee == first_staff)
        # One column on a phone: nothing wider than the screen, buttons easy to tap.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEW["width"]
        for button in ("#accept", "#return-open"):
            box = page.locator(button).bounding_box()
            assert box is not None and box["height"] >= 44 and box["width"] >= 300, button

        page.click("#return-open")
        page.select_option("#return-reason", "not_our_function")
        page.fill("#return-note", "是市政供水管的问题")
        page.click("#return-submit")
        notice(page, "已退单")
        assert page.locator("#return-open").is_hidden()

        with stack.sessions() as session:
            returned = session.get(WorkOrder, first_id)
            assert (returned.status, returned.return_reason) == ("returned", "not_our_function")
        second_id, second_department, second_assignee = lead_order(stack, number)
        assert second_id != first_id and second_department != first_department
        wait_for_sms(stack, "改派")

        page.click("#logout")
        page.wait_for_url("**/console/login**")
        second_staff = someone_in(second_department, second_assignee)
        sign_in(page, stack, staff_account(stack, department=second_department,
                                           staff_id=second_staff))
        assert page.locator(f'[data-order="{first_id}"]').count() == 0
        open_order(page, second_id)
        page.click("#accept")
        notice(page, "已接单")
        assert PHONE in page.inner_text("#phone")  # the assignee may call the resident
        wait_for_sms(stack, "接单")

        page.click("#progress-open")
        page.fill("#progress-text", "已到现场查看水管")
        page.click("#progress-submit")
        notice(page, "进展已发送")
        wait_for_sms(stack, "已到现场查看水管")

        photo = tmp_path / "fixed.png"
        photo.write_bytes(tiny_png())
        page.click("#resolve-open")
        page.fill("#resolve-note", "水管接头已更换，不再漏水")
        page.set_input_files("#resolve-photo", str(photo))
        page.click("#resolve-submit")
        notice(page, "已办结")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#photos img')].some(i => i.naturalWidth > 0)")
    finally:
        context.close()
    assert errors == []

    with stack.sessions() as session:
        ticket = session.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
        assert ticket.status == "resolved"
        assert session.get(WorkOrder, second_id).status == "resolved"
        photos = session.execute(select(Attachment).where(
            Attachment.ticket_id == ticket.id, Attachment.kind == "resolution_photo")
        ).scalars().all()
        actions = session.execute(select(AuditEntry.action).where(
            AuditEntry.ticket_id == ticket.id).order_by(AuditEntry.id)).scalars().all()
    assert len(photos) == 1 and photos[0].content_type == "image/png"
    stored = stack.uploads / photos[0].url
    try:
        assert stored.read_bytes() == photo.read_bytes()
    finally:
        stored.unlink(missing_ok=True)
        if stored.parent.exists() and not any(stored.parent.iterdir()):
            stored.parent.rmdir()
    for action in ("view_order", "return", "accept", "progress", "resolve", "view_photo"):
        assert action in actions, actions

    texts = wait_for_sms(stack, "打分")
    rating = next(t for t in texts if "打分" in t)
    assert number in rating and "回复1很不满意" in rating and "回复5非常满意" in rating


def test_supervisor_sees_the_department_queue_on_a_phone(stack: Any, browser: Any) -> None:
    number = report_leak(stack, SUPERVISED_PHONE)
    order_id, department, _assignee = lead_order(stack, number)
    username = f"e2e-head-{secrets.token_hex(3)}"
    with session_scope(stack.sessions) as session:
        create_account(session, username=username, password=PASSWORD, role="supervisor",
                       display_name="测试主管", department=department, now=utc_now())
    context = browser.new_context(viewport=PHONE_VIEW, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(page, stack, username)
        page.click("#tab-dept")
        page.wait_for_selector(f'#dept-orders [data-order="{order_id}"]')
        assert "近30天" in page.inner_text("#metrics")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEW["width"]
        page.click(f'#dept-orders [data-order="{order_id}"]')
        page.wait_for_selector("#detail-view:not([hidden]) #summary dl")
        assert SUPERVISED_PHONE not in page.inner_text("#summary")  # not the assignee: masked
        assert page.locator("#accept").is_hidden()  # no roster id: a supervisor who only looks
    finally:
        context.close()
    assert errors == []
    with stack.sessions() as session:
        actions = session.execute(select(AuditEntry.action).join(
            Account, Account.id == AuditEntry.account_id).where(Account.username == username)
        ).scalars().all()
    assert {"login", "view_department", "view_order"} <= set(actions)
