"""The console in a real headless browser (Debian's chromium, driven by Playwright): a guide logs in, finds
the waiting hand-offs first, replies to a web chat customer who sees it live, gives the chat back to the
bot, teaches the bot a question; an operator reads the journey funnel as a chart.

Screenshots of what the browser showed are kept in /tmp/console-shots/.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.browser import Site, expect, running_site, shoot, until

UNANSWERABLE = "你们和大牌精华比哪个好用"


@pytest.fixture
async def site(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Site]:
    async with running_site(db_url, start, tmp_path) as running:
        yield running


async def test_a_guide_logs_in_with_a_password_and_sees_only_the_guide_pages(site: Site) -> None:
    page = await (await site.context(site.harness.clock.now())).new_page()
    await page.goto(site.url("/console"))
    await expect(page.locator("#login")).to_be_visible()
    await shoot(page, "01-login")

    await page.fill("#login-staff", "xiaomei")
    await page.fill("#login-password", "not the password")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_have_text("工号或密码不对，请重新输入")
    await expect(page.locator("#shell")).to_be_hidden()

    await page.fill("#login-password", "guide password 1")
    await page.click("#login-submit")
    await expect(page.locator("#me-name")).to_have_text("小美")
    await expect(page.locator("#me-role")).to_contain_text("导购")
    await expect(page.locator("[data-nav=inbox]")).to_be_visible()
    await expect(page.locator("[data-nav=dashboard]")).to_be_hidden()  # operators only

    await page.reload()  # the session cookie keeps the guide logged in
    await expect(page.locator("#me-name")).to_have_text("小美")
    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible()
    await page.reload()
    await expect(page.locator("#login")).to_be_visible()


async def test_the_inbox_puts_waiting_hand_offs_first_with_how_long_they_have_waited(site: Site) -> None:
    h = site.harness
    await h.customer_adds_guide("lin", "林小姐")
    await h.customer_says("lin", UNANSWERABLE)               # handed off at 10:15
    await h.run_for(timedelta(minutes=20))
    await h.customer_adds_guide("wang", "王女士")
    await h.customer_says("wang", "可以寄到香港吗")           # handed off at 10:35
    await h.run_for(timedelta(minutes=5))
    await h.customer_adds_guide("chen", "陈先生")
    await h.customer_says("chen", "包邮吗")                   # answered at 10:40: the newest message
    await h.run_for(timedelta(minutes=5))                     # the guide looks at 10:45

    page = await site.console("xiaomei", at=h.clock.now())
    names = page.locator(".conv .conv-name")
    await expect(names).to_have_text(["林小姐", "王女士", "陈先生"])
    await expect(page.locator(".conv[data-state=handoff] .pill")).to_have_text(["已等待 30 分钟", "已等待 10 分钟"])
    await expect(page.locator(".conv").nth(2).locator(".pill")).to_have_text("机器人接待")
    await expect(page.locator("#waiting-badge")).to_have_text("2")
    await shoot(page, "02-inbox")

    await page.click(".conv:has-text('林小姐')")
    question = page.locator(".msg.in", has_text=UNANSWERABLE)
    await expect(question.locator(".chip.handoff")).to_be_visible()
    await expect(question.locator("button.teach")).to_be_visible()
    await expect(page.locator(".msg.out.bot", has_text="转人工：这个问题请测试顾问来回答")).to_be_visible()
    await shoot(page, "03-conversation-handoff")

    await page.click(".conv:has-text('陈先生')")
    answer = page.locator(".msg.out.bot", has_text="答·运费")
    await expect(answer.locator(".chip.faq")).to_have_text("FAQ · shipping_fee")
    await expect(answer.locator(".why")).to_contain_text("置信度")
    greeting = page.locator(".msg.out.bot", has_text="问候：陈先生您好")
    await expect(greeting.locator(".chip.journey")).to_contain_text("new_customer · greeting")


async def test_a_web_chat_customer_sees_the_guides_reply_live_and_the_bot_again_after_release(site: Site) -> None:
    h = site.harness
    customer = await (await site.context()).new_page()
    await customer.goto(site.url("/"))
    await customer.fill("#name", "林小姐")
    await customer.click("#join")
    await expect(customer.locator("#log")).to_contain_text("问候：林小姐您好")
    await customer.fill("#text", UNANSWERABLE)
    await customer.press("#text", "Enter")
    await expect(customer.locator("#log")).to_contain_text("转人工：这个问题请测试顾问来回答")

    guide = await site.console("xiaomei", at=h.clock.now())
    await guide.click(".conv[data-state=handoff]:has-text('林小姐')")
    await expect(guide.locator(".chat-head .pill")).to_have_text(re.compile("已等待"))
    await guide.fill("#reply-text", "您好，我是小美～我们的精华更适合换季修护，稍后发您对比图")
    await guide.click("#send")

    await expect(customer.locator("#log")).to_contain_text("我们的精华更适合换季修护")   # live, no reload
    await expect(guide.locator(".msg.out.staff", has_text="我们的精华更适合换季修护")).to_be_visible()
    await expect(guide.locator(".chat-head .pill")).to_have_text("导购接待中")
    await shoot(customer, "04-webchat-customer-sees-reply")
    await shoot(guide, "05-conversation-guide-replied")

    await customer.fill("#text", "包邮吗")  # a person has the chat: the bot stays out of it
    await customer.press("#text", "Enter")
    await expect(guide.locator(".msg.in", has_text="包邮吗")).to_be_visible()
    await expect(customer.locator("#log")).not_to_contain_text("答·运费")

    await guide.click("#release")
    await expect(guide.locator(".chat-head .pill")).to_have_text("机器人接待")
    await expect(guide.locator("#release")).to_be_hidden()
    await customer.fill("#text", "运费多少")
    await customer.press("#text", "Enter")
    await expect(customer.locator("#log")).to_contain_text("答·运费")
    await shoot(guide, "06-conversation-released")


async def test_a_guide_teaches_a_handed_off_question_and_the_bot_answers_it_at_once(site: Site) -> None:
    h = site.harness
    await h.customer_adds_guide("lin", "林小姐")
    await h.customer_says("lin", "快递寄出后几天能到")
    await until(lambda: h.texts("lin")[-1:] == ["转人工：这个问题请测试顾问来回答"], "the bot hands the question off")

    page = await site.console("xiaomei", at=h.clock.now())
    await page.click(".conv:has-text('林小姐')")
    await page.click(".msg.in:has-text('快递寄出后几天能到') button.teach")
    await expect(page.locator("#teach-example")).to_have_value("快递寄出后几天能到")
    await page.select_option("#teach-intent", "shipping_time")
    await expect(page.locator("#teach-answer")).to_contain_text("答·发货")
    await shoot(page, "07-teach-dialog")
    await page.click("#teach-submit")
    await expect(page.locator("#toast")).to_be_visible()
    await expect(page.locator(".modal")).to_have_count(0)

    faq = (site.scripts / "faq.yaml").read_text(encoding="utf-8")
    assert "快递寄出后几天能到" in faq
    assert faq.startswith("# Test fixture:")  # the operator's comments are kept

    await h.customer_says("lin", "快递寄出后几天能到", message_id="again")
    await until(lambda: h.texts("lin")[-1:] == ["答·发货：测试订单下单后 1 天内发货"], "the bot answers what it was taught")

    await page.goto(site.url("/console#/teach"))
    await expect(page.locator("tr[data-intent=shipping_time]")).to_contain_text("快递寄出后几天能到")
    await shoot(page, "08-teach-page")


async def test_the_operator_reads_the_journey_funnel_as_a_chart(site: Site) -> None:
    h = site.harness
    for n, name in enumerate(("林小姐", "王女士", "陈先生", "张同学", "李女士", "赵先生")):
        await h.customer_adds_guide(f"c{n}", name)
    await h.run_for(timedelta(days=3, hours=2))  # greeting, day-1 care, the day-3 gift (A or B)
    for n in (0, 1, 4):
        await h.customer_says(f"c{n}", "领取")
    await h.run_for(timedelta(hours=2))

    page = await site.console("aqing", at=h.clock.now())
    await page.click("[data-nav=dashboard]")
    chart = page.locator("#funnel-chart")
    await expect(chart).to_be_visible()
    await expect(page.locator("#funnel-table tbody tr").first).to_contain_text("greeting")
    drawn = await page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('funnel-chart'));
        return { labels: chart.data.labels, sent: chart.data.datasets[1].data, width: chart.width };
    }""")
    assert drawn["labels"][:2] == ["greeting", "day1_care"]
    assert drawn["sent"][0] == 6 and drawn["width"] > 300
    gift = page.locator(".ab[data-step=day3_followup]")
    await expect(gift).to_contain_text("方案 A")
    await expect(gift).to_contain_text("方案 B")
    await expect(gift).to_contain_text("z =")
    await expect(page.locator("#decisions-chart")).to_be_visible()
    csv = await page.locator(".card h3 a.csv").first.get_attribute("href")
    assert csv is not None and "format=csv" in csv
    await shoot(page, "09-dashboard")
    await page.evaluate("document.getElementById('view').scrollTo(0, 1e6)")
    await shoot(page, "10-dashboard-lower")


async def test_the_operator_overrules_the_guard_and_previews_a_journey_for_a_profile(site: Site) -> None:
    h = site.harness
    await h.member_joins_group("m1", "g1")
    await h.run_for(timedelta(hours=2))
    await h.member_says_in_group("m1", "g1", "团购的姐妹加我微信，拼单更便宜")

    page = await site.console("aqing", at=h.clock.now())
    await page.click("[data-nav=guard]")
    row = page.locator("#guard-events tbody tr").first
    await expect(row).to_contain_text("团购的姐妹加我微信")
    await expect(row.locator(".tag")).to_have_text(["违禁词"])  # the rule as staff read it, not its code
    await row.locator("button.not-spam").click()
    await expect(row.locator(".verdict-cell")).to_have_text("已标记不是垃圾")
    await page.reload()
    await expect(page.locator("#guard-events tbody tr").first.locator(".verdict-cell")).to_have_text("已标记不是垃圾")
    await shoot(page, "11-guard")

    await page.click("[data-nav=preview]")
    await page.select_option("#preview-journey", "new_customer")
    await page.fill("#preview-name", "林小姐")
    await page.check("input[value=sensitive]")
    await page.click("#preview-run")
    timeline = page.locator("#preview-result .ptl")
    await expect(timeline.locator(".item.sent").first).to_contain_text("问候：林小姐您好")
    await expect(timeline).to_contain_text("第30天·敏感肌：林小姐")
    await shoot(page, "12-preview")
