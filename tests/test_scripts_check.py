"""Operators' YAML: `siyu check` names file, line and fix; a broken edit never replaces a good version."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.library import ScriptLibrary
from tests.conftest import ROOT
from tests.harness import CONFIG, SCRIPTS

BRAND = {"name": "山茶集", "group_name": "群", "group_link": "http://x", "gift_main": "A", "gift_backup": "B",
         "claim_keyword": "领取", "store": "店"}


def siyu(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    target = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, target)  # the test scripts: the shipped ones are checked only as shipped
    return target


def test_shipped_config_and_scripts_are_valid() -> None:
    result = siyu("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all good" in result.stdout


def test_check_reports_each_problem_with_file_and_line(scripts: Path) -> None:
    (scripts / "journeys" / "new.yaml").write_text(
        "journey: winback\n"
        "title: 召回\n"
        "trigger: tag_added:dormant\n"
        "exit_when: [replied, bored]\n"
        "steps:\n"
        "  - id: nudge\n"
        "    at: 1d\n"
        "    say: 好久不见 {{ customer.name }}\n"
        "  - id: day3_followup\n"
        "    at: 3dayz\n"
        "    say: hi\n"
        "  - id: gift\n"
        "    at: 5d\n"
        "    when: customer.__class__ == 1\n"
        "    say: |\n"
        "      第一行\n"
        "      {% if customer.name %}没有结束\n",
        encoding="utf-8")
    result = siyu("check", "--config", str(CONFIG), "--scripts", str(scripts))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    path = str(scripts / "journeys" / "new.yaml")
    assert f"{path}:4: unknown exit reason 'bored' — use replied, opted_out, churned, purchased" in lines
    assert (f"{path}:10: step 'day3_followup' has 'at: 3dayz' — expected a duration like '3d' or '36h'"
            in lines)
    assert any(l.startswith(f"{path}:14: step 'gift' when: 'customer' has no field '__class__'") for l in lines)
    assert any(l.startswith(f"{path}:17: step 'gift' template syntax:") for l in lines)


def test_yaml_syntax_error_names_the_line(scripts: Path) -> None:
    (scripts / "faq.yaml").write_text("intents:\n  - id: a\n    examples: [x, y\n    answer: z\n", encoding="utf-8")
    result = siyu("check", "--config", str(CONFIG), "--scripts", str(scripts))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{scripts / 'faq.yaml'}:4: YAML syntax:")


def test_unknown_template_variable_is_caught_before_sending(scripts: Path) -> None:
    path = scripts / "journeys" / "new_customer.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("的{{ guide.name }}", "的{{ guide.nmae }}"),
                    encoding="utf-8")
    result = siyu("check", "--config", str(CONFIG), "--scripts", str(scripts))
    assert result.returncode == 1
    assert f"{path}:13: step 'greeting' template: 'dict object' has no attribute 'nmae'" in result.stdout


def test_bad_config_is_reported_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brand:\n  name: 山茶集\npolicy:\n  quiet_hours: 21-9\n  timezone: Mars/Base\n",
                      encoding="utf-8")
    result = siyu("check", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:4: policy.quiet_hours: expected a time range like '10:00-20:00', got '21-9'" in result.stdout
    assert f"{config}:5: policy.timezone: unknown timezone 'Mars/Base' — use an IANA name like Asia/Shanghai" \
        in result.stdout


def test_broken_edit_keeps_the_last_good_version_running(scripts: Path) -> None:
    library = ScriptLibrary(scripts, BRAND)
    assert library.reload() == []
    good = library.journeys["new_customer"]
    path = scripts / "journeys" / "new_customer.yaml"
    original = path.read_text(encoding="utf-8")

    path.write_text(original.replace("at: 3d\n", "at: 3dayz\n"), encoding="utf-8")
    problems = library.reload(force=True)
    assert [str(p) for p in problems] == [
        f"{path}:32: step 'day3_followup' has 'at: 3dayz' — expected a duration like '3d' or '36h'"]
    assert library.journeys["new_customer"] is good  # still serving the old version

    path.write_text(original.replace("加上您的第一天", "认识您的第一天"),
                    encoding="utf-8")
    assert library.reload(force=True) == []
    assert library.journeys["new_customer"] is not good


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    from bot.config_loader import load_config as load_settings
    from bot.problems import ScriptError

    config = tmp_path / "config.yaml"
    config.write_text("adapters:\n  telegram:\n    mode: polling\n", encoding="utf-8")
    settings = load_settings(config, env={"SIYU_TELEGRAM_TOKEN": "1:abc", "SIYU_TELEGRAM_API_BASE": "http://127.0.0.1:9/bot"})
    assert settings.adapters.telegram.token.get_secret_value() == "1:abc"
    assert "1:abc" not in repr(settings)
    assert settings.adapters.telegram.api_base == "http://127.0.0.1:9/bot"
    assert "1:abc" not in settings.model_dump_json()
    config.write_text("adapters:\n  telegram:\n    token: 1:abc\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="config.yaml:3: adapters.telegram.token: secrets never go in config.yaml"):
        load_settings(config, env={})


@pytest.mark.parametrize("order", ["before", "after"])
def test_config_option_works_before_or_after_the_command(tmp_path: Path, order: str) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("brand:\n  name: 山茶集\nserver:\n  port: nine\n", encoding="utf-8")
    args = ("--config", str(other), "check") if order == "before" else ("check", "--config", str(other))
    result = siyu(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"{other}:4: server.port:")


@pytest.mark.parametrize("order", ["before", "after"])
def test_scripts_option_works_before_or_after_the_command(scripts: Path, order: str) -> None:
    path = scripts / "journeys" / "new_customer.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("at: 3d\n", "at: 3dayz\n"), encoding="utf-8")
    args = ("--scripts", str(scripts), "check") if order == "before" else ("check", "--scripts", str(scripts))
    result = siyu(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{path}:32: step 'day3_followup' has 'at: 3dayz' — expected a duration like '3d' or '36h'"]


@pytest.mark.parametrize(("text", "expected"), [
    ("brand:\n  slogan: 温和修护\n", ":2: brand: brand needs a 'name'"),
    ("bogus: 1\n", ":1: bogus: unknown setting"),
    ("brand: [山茶集\n", ":2: YAML syntax:"),
    ("staff:\n  - {id: mei, name: 小美, identities: {wecom: g1}}\n  - {id: hua, name: 阿华, identities: {wecom: g1}}\n",
     ":3: staff 'mei' and 'hua' both have wecom id 'g1' — an identity is one person's"),
])
def test_broken_config_reports_only_its_own_problems(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    result = siyu("check", "--config", str(config))  # the shipped scripts use brand.group_name etc.
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{config}{expected}"), result.stdout
    assert "template" not in result.stdout
    assert result.stderr.strip() == "1 problem(s) found"


def test_broken_config_still_checks_scripts_with_the_brand_as_written(tmp_path: Path, scripts: Path) -> None:
    from bot.check import check_everything

    config = tmp_path / "config.yaml"
    config.write_text("brand:\n" + "".join(f"  {k}: {v}\n" for k, v in BRAND.items()) + "bogus: 1\n",
                      encoding="utf-8")
    path = scripts / "journeys" / "new_customer.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("brand.group_name", "brand.gruop_name"),
                    encoding="utf-8")
    problems = [str(p) for p in check_everything(config, scripts)]
    assert problems[0].startswith(f"{config}:9: bogus: unknown setting")
    assert len(problems) == 2
    assert problems[1].startswith(f"{path}:28: step 'group_invite' template: 'dict object' has no attribute "
                                  "'gruop_name'")


# --- every problem of every operator file, once (fixtures written here, never the shipped scripts) ---

GOOD_FILES = {
    "config.yaml": "brand:\n  name: 山茶集\n",
    "scripts/journeys/hello.yaml": ("journey: hello\ntitle: 问候\ntrigger: contact_added\nsteps:\n"
                                    "  - id: greeting\n    at: 0m\n    say: 您好 {{ customer.name }}\n"),
    "scripts/faq.yaml": "intents:\n  - id: shipping_fee\n    examples: [包邮吗]\n    answer: 满 99 包邮\n",
    "scripts/guard.yaml": "flood: {messages: 6, seconds: 30}\n",
}


def check_files(tmp_path: Path, changed: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`siyu check` over the good fixture files with `changed` ones replaced; returns the run and the root."""
    for name, text in {**GOOD_FILES, **changed}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return siyu("check", "--config", str(tmp_path / "config.yaml"), "--scripts", str(tmp_path / "scripts")), tmp_path


def test_check_lists_every_mistake_of_a_journey(tmp_path: Path) -> None:
    result, root = check_files(tmp_path, {"scripts/journeys/winback.yaml": (
        "journey: winback\n"
        "title: 召回\n"
        "trigger: manual\n"
        "steps:\n"
        "  - id: nudge\n"
        "    at: 3dayz\n"                # a bad offset …
        "    say: |\n"
        "      您好\n"
        "      {{ customer.name }\n"     # … and a bad template in the same step
        "  - id: later\n"
        "    at: 2d\n"
        "    say: \"{{ customer.nmae }}\"\n")})  # and a second bad step
    path = root / "scripts" / "journeys" / "winback.yaml"
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert len(lines) == 3, result.stdout
    assert lines[0] == f"{path}:6: step 'nudge' has 'at: 3dayz' — expected a duration like '3d' or '36h'"
    assert lines[1].startswith(f"{path}:9: step 'nudge' template syntax: unexpected '}}'")
    assert lines[2].startswith(f"{path}:12: step 'later' template: 'dict object' has no attribute 'nmae'")
    assert result.stderr.strip() == "3 problem(s) found"


def test_check_lists_every_mistake_of_guard_yaml(tmp_path: Path) -> None:
    result, root = check_files(tmp_path, {"scripts/guard.yaml": (
        "flood:\n  messages: lots\nrepeat:\n  window: 3x\nescalation:\n  actions: [warn, kick]\n")})
    path = root / "scripts" / "guard.yaml"
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:2: flood.messages must be a number ≥ 1, got 'lots'",
        f"{path}:4: repeat.window must be a duration like '10m' or '24h', got '3x'",
        f"{path}:6: unknown action 'kick' — use warn, mute or remove",
    ]


def test_check_lists_every_mistake_of_faq_yaml(tmp_path: Path) -> None:
    result, root = check_files(tmp_path, {"scripts/faq.yaml": (
        "intents:\n"
        "  - id: shipping_fee\n"
        "    examples: []\n"
        "    answer: \"\"\n"
        "  - id: returns\n"
        "    examples: [可以退货吗]\n"
        "    answer: 7 天无理由\n"
        "    in_groups: maybe\n")})
    path = root / "scripts" / "faq.yaml"
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:3: intent 'shipping_fee' examples must not be empty",
        f"{path}:4: intent 'shipping_fee' has an empty 'answer' — write what the bot replies",
        f"{path}:8: intent 'returns' in_groups must be true or false, got 'maybe'",
    ]


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("config.yaml", "brand:\n  name: 山茶集\nservr:\n  port: 1\n",
     ":3: servr: unknown setting — expected one of brand, database_url, server, "),
    ("scripts/journeys/hello.yaml", GOOD_FILES["scripts/journeys/hello.yaml"] + "colour: red\n",
     ":8: unknown key 'colour' — expected one of journey, title, trigger, exit_when, priority, expire, interests, "
     "steps"),
    ("scripts/journeys/hello.yaml", GOOD_FILES["scripts/journeys/hello.yaml"] + "    tga: x\n",
     ":8: step 'greeting' has unknown key 'tga' — expected one of id, at, on, time, dates, say, variants, window, "
     "when, reply, expire, tag, on_reply"),
    ("scripts/guard.yaml", "flood:\n  mesages: 3\n",
     ":2: flood.mesages: unknown key — expected one of messages, seconds"),
    ("scripts/faq.yaml", GOOD_FILES["scripts/faq.yaml"] + "    answr: 包邮\n",
     ":5: intent 'shipping_fee' has unknown key 'answr' — expected one of id, description, examples, answer, "
     "in_groups"),
])
def test_an_unknown_key_names_the_allowed_ones(tmp_path: Path, name: str, text: str, expected: str) -> None:
    result, root = check_files(tmp_path, {name: text})
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(f"{root / name}{expected}"), result.stdout
    assert result.stderr.strip() == "1 problem(s) found"


def test_each_problem_is_listed_once_with_yaml_and_model_problems_together(tmp_path: Path) -> None:
    journey = ("journey: twice\ntitle: 重复\ntrigger: manual\ntrigger: manual\nsteps:\n"
               + "".join(f"  - id: same\n    at: {n}d\n    say: hi\n" for n in (1, 2, 3)))
    result, root = check_files(tmp_path, {"scripts/journeys/twice.yaml": journey})
    path = root / "scripts" / "journeys" / "twice.yaml"
    assert result.stdout.splitlines() == [
        f"{path}:4: key 'trigger' appears twice — keep one, the second would silently win",
        f"{path}:9: step 'same' is used twice — step ids must be unique",
        f"{path}:12: step 'same' is used twice — step ids must be unique",
    ]
