"""Workers AI's toMarkdown through the official `cloudflare` SDK: real
documents (LibreOffice-made fixtures), one result per file, a damaged PDF
as that file's own error."""

from pathlib import Path

import httpx
import pytest
from cloudflare import Cloudflare

FIXTURES = Path(__file__).resolve().parents[2] / "crates/hearth-search/tests/fixtures"


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def test_supported_lists_the_rich_types(cf, hearth):
    supported = list(cf.ai.to_markdown.supported(account_id=hearth["account"]))
    extensions = {s.extension for s in supported}
    assert {"pdf", "docx", "xlsx", "html", "csv", "odt", "txt"} <= extensions
    assert any(s.mime_type == "application/pdf" for s in supported)


def test_transform_converts_each_file(cf, hearth):
    damaged = (FIXTURES / "rivers.pdf").read_bytes()[:500]
    files = [
        ("paris.docx", (FIXTURES / "paris.docx").read_bytes()),
        ("cities.xlsx", (FIXTURES / "cities.xlsx").read_bytes()),
        ("rivers.pdf", (FIXTURES / "rivers.pdf").read_bytes()),
        ("page.html", b"<h2>Hello</h2><p>from <i>HTML</i></p>"),
        ("damaged.pdf", damaged),
    ]
    # cloudflare 5.9.0's `to_markdown.transform` cannot send files (it calls
    # get_api_list with `files=`, which raises TypeError), so the multipart
    # request it means to send is sent with httpx, the SDK's own transport,
    # and the answer read with the SDK's response type.
    from cloudflare.types.ai import ToMarkdownTransformResponse

    resp = httpx.post(f"{hearth['base']}/client/v4/accounts/{hearth['account']}/ai/tomarkdown",
                      headers={"Authorization": f"Bearer {hearth['token']}"},
                      files=[("files", (name, data)) for name, data in files], timeout=60)
    assert resp.status_code == 200, resp.text
    results = [ToMarkdownTransformResponse.model_validate(r) for r in resp.json()["result"]]
    assert [r.name for r in results] == [name for name, _ in files]
    by_name = {r.name: r for r in results}
    assert "# Paris" in by_name["paris.docx"].data and by_name["paris.docx"].format == "markdown"
    assert "| Oslo | Norway | 709000 |" in by_name["cities.xlsx"].data
    assert "The Danube flows through ten countries" in by_name["rivers.pdf"].data
    assert by_name["rivers.pdf"].mime_type == "application/pdf"
    assert "## Hello" in by_name["page.html"].data and "*HTML*" in by_name["page.html"].data
    assert int(by_name["paris.docx"].tokens) > 0
    assert by_name["damaged.pdf"].format == "error"
