"""Retrieval quality of AI Search: recall@5 of `search` with vector only,
keyword only and hybrid retrieval, on the Python FAQ (the Q&A pages of
Debian's python3.11-doc, PSF license): each answer is one file, its
question is the query, and a hit is that file among the top 5 chunks.

  python3 bench/ai_search_recall.py BASE_URL ACCOUNT TOKEN FAQ_RST_DIR WORK_DIR
"""

import json
import pathlib
import re
import sys
import time
import urllib.request

base, account, token, faq_dir, work = sys.argv[1:6]
api = f"{base}/client/v4/accounts/{account}/ai-search/instances"


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)


def questions_and_answers(path):
    """(question, answer) for each heading that ends in '?'."""
    lines = path.read_text().splitlines()
    heads = []
    for i in range(len(lines) - 1):
        title, rule = lines[i].strip(), lines[i + 1].strip()
        if title and len(rule) >= len(title) and len(set(rule)) == 1 and rule[0] in "=-~^*+#":
            heads.append((i, title))
    out = []
    for n, (i, title) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = "\n".join(lines[i + 2 : end]).strip()
        if title.endswith("?") and len(body) >= 120:
            out.append((title, body))
    return out


corpus = pathlib.Path(work) / "faq"
pairs = []
for rst in sorted(pathlib.Path(faq_dir).glob("*.rst.txt")):
    for n, (question, answer) in enumerate(questions_and_answers(rst)):
        key = f"{rst.name.split('.')[0]}/{n:03}.md"
        (corpus / key).parent.mkdir(parents=True, exist_ok=True)
        # The answer alone: the question must be found, not read back.
        (corpus / key).write_text(re.sub(r"\n{3,}", "\n\n", answer) + "\n")
        pairs.append((question, key))
print(f"{len(pairs)} questions, one answer file each", file=sys.stderr)

started = time.time()
call("POST", api, {
    "id": "python-faq", "type": "local", "source": str(corpus),
    "embedding_model": "@cf/baai/bge-small-en-v1.5", "chunk_size": 256, "chunk_overlap": 10,
    "index_method": {"vector": True, "keyword": True},
})
while True:
    jobs = call("GET", f"{api}/python-faq/jobs")["result"]
    if jobs and all(j["status"] not in ("running", "queued") for j in jobs):
        break
    time.sleep(1)
stats = call("GET", f"{api}/python-faq/stats")["result"]
print(f"indexed {stats['completed']} files in {time.time() - started:.0f} s", file=sys.stderr)

modes = {
    "vector": {"retrieval_type": "vector"},
    "keyword (and)": {"retrieval_type": "keyword", "keyword_match_mode": "and"},
    "keyword (or)": {"retrieval_type": "keyword", "keyword_match_mode": "or"},
    "hybrid rrf (and)": {"retrieval_type": "hybrid", "keyword_match_mode": "and"},
    "hybrid rrf (or)": {"retrieval_type": "hybrid", "keyword_match_mode": "or"},
}
results = {}
for name, retrieval in modes.items():
    hits = 0
    for question, key in pairs:
        body = {"query": question, "ai_search_options": {"retrieval": {
            **retrieval, "max_num_results": 5, "match_threshold": 0}}}
        chunks = call("POST", f"{api}/python-faq/search", body)["result"]["chunks"]
        hits += any(c["item"]["key"] == key for c in chunks)
    results[name] = hits / len(pairs)
    print(f"{name:18} recall@5 = {results[name]:.3f} ({hits}/{len(pairs)})")
print(json.dumps(results))
