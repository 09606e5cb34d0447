"""Browser clients (CORS) and the published OpenAPI document."""

from __future__ import annotations

from httpx import AsyncClient

from tests.support.apps import serve

ORIGIN = "http://localhost:4200"


async def test_cors_preflight_allows_listed_origin_with_authorization(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # A single origin parses.
    async with serve(settings_factory(CORS_ORIGINS=ORIGIN)) as http:
        preflight = await http.options(
            "/api/articles",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        simple = await http.get("/api/tags", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()

        other = await http.options(
            "/api/articles",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        plain = await http.get("/api/tags", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers


async def test_openapi_document_describes_the_api(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    operations = {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if path.startswith("/api/")
    }
    expected = {
        ("POST", "/api/users/login"), ("POST", "/api/users"), ("GET", "/api/user"),
        ("PUT", "/api/user"), ("GET", "/api/profiles/{username}"),
        ("POST", "/api/profiles/{username}/follow"), ("DELETE", "/api/profiles/{username}/follow"),
        ("GET", "/api/articles"), ("POST", "/api/articles"), ("GET", "/api/articles/feed"),
        ("GET", "/api/articles/{slug}"), ("PUT", "/api/articles/{slug}"),
        ("DELETE", "/api/articles/{slug}"), ("GET", "/api/articles/{slug}/comments"),
        ("POST", "/api/articles/{slug}/comments"),
        ("DELETE", "/api/articles/{slug}/comments/{comment_id}"),
        ("POST", "/api/articles/{slug}/favorite"), ("DELETE", "/api/articles/{slug}/favorite"),
        ("GET", "/api/tags"),
    }  # fmt: skip
    assert expected <= operations
    assert "201" in paths["/api/users"]["post"]["responses"]
    assert "201" in paths["/api/articles"]["post"]["responses"]
    assert "204" in paths["/api/articles/{slug}"]["delete"]["responses"]
    for path, method in (("/api/articles/{slug}", "put"), ("/api/user", "get")):
        responses = paths[path][method]["responses"]
        for status in ("401", "422"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    scheme = document["components"]["securitySchemes"]["Token"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": scheme["description"],
    }
    article = document["components"]["schemas"]["Article"]
    assert {"tagList", "createdAt", "favoritesCount", "body"} <= set(article["properties"])
    summary = document["components"]["schemas"]["ArticleSummary"]
    assert "body" not in summary["properties"]
