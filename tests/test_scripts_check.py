"""Operators' YAML: `siyu check` names file, line and fix; a broken edit never replaces a good version."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.library import ScriptLibrary
from tests.conftest import ROOT

BRAND = {"name": "山茶集", "group_name": "群", "group_link": "http://x", "gift_main": "A", "gift_backup": "B",
         "claim_keyword": "领取", "store": "店"}


def siyu(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    target = tmp_path / "scripts"
    shutil.copytree(ROOT / "scripts", target)
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
    result = siyu("check", "--scripts", str(scripts))
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
    result = siyu("check", "--scripts", str(scripts))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{scripts / 'faq.yaml'}:4: YAML syntax:")


def test_unknown_template_variable_is_caught_before_sending(scripts: Path) -> None:
    path = scripts / "journeys" / "new_customer.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("{{ guide.name }} 🌸", "{{ guide.nmae }} 🌸"),
                    encoding="utf-8")
    result = siyu("check", "--scripts", str(scripts))
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

    path.write_text(original.replace("昨天加上您很开心", "昨天认识您很开心"),
                    encoding="utf-8")
    assert library.reload(force=True) == []
    assert library.journeys["new_customer"] is not good


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    from bot.config import load_settings
    from bot.problems import ScriptError

    config = tmp_path / "config.yaml"
    config.write_text("adapters:\n  telegram:\n    mode: polling\n", encoding="utf-8")
    settings = load_settings(config, env={"SIYU_TELEGRAM_TOKEN": "1:abc", "SIYU_TELEGRAM_API_BASE": "http://127.0.0.1:9/bot"})
    assert settings.adapters.telegram.token == "1:abc"
    assert settings.adapters.telegram.api_base == "http://127.0.0.1:9/bot"
    assert "1:abc" not in settings.model_dump_json()
    config.write_text("adapters:\n  telegram:\n    token: 1:abc\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="config.yaml:3: adapters.telegram.token: secrets never go in config.yaml"):
        load_settings(config, env={})
