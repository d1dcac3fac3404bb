"""Maestro's selector rules over real-shaped view hierarchies (UiAutomator2, XCUITest): plain unit tests."""

from __future__ import annotations

import pytest

from qualgent.drivers.hierarchy import Node, find, parse_source, text_matches
from qualgent.flows.model import Selector

# The shape UiAutomator2 gives (GET /source): bounds as [x1,y1][x2,y2], Android's attribute names.
ANDROID = """<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>
<hierarchy index="0" class="hierarchy" rotation="0" width="1080" height="2400">
  <android.widget.FrameLayout index="0" package="com.example.shop" class="android.widget.FrameLayout" text=""
      resource-id="" clickable="false" enabled="true" focused="false" selected="false" checked="false"
      displayed="true" bounds="[0,0][1080,2400]">
    <android.widget.TextView class="android.widget.TextView" text="Welcome back" resource-id="com.example.shop:id/title"
        clickable="false" enabled="true" displayed="true" bounds="[40,100][1040,180]" />
    <android.widget.EditText class="android.widget.EditText" text="" hint="Email address"
        resource-id="com.example.shop:id/email" clickable="true" enabled="true" focused="true" displayed="true"
        bounds="[40,300][1040,400]" />
    <android.widget.LinearLayout class="android.widget.LinearLayout" resource-id="com.example.shop:id/row"
        clickable="true" enabled="true" displayed="true" bounds="[40,500][1040,600]">
      <android.widget.TextView class="android.widget.TextView" text="Remember me" clickable="false" enabled="true"
          displayed="true" bounds="[40,500][600,600]" />
      <android.widget.CheckBox class="android.widget.CheckBox" text="" content-desc="Remember"
          resource-id="com.example.shop:id/remember" checkable="true" checked="true" clickable="true"
          enabled="true" displayed="true" bounds="[900,500][1000,600]" />
    </android.widget.LinearLayout>
    <android.widget.Button class="android.widget.Button" text="Sign in" resource-id="com.example.shop:id/sign_in"
        clickable="true" enabled="false" displayed="true" bounds="[40,700][1040,800]" />
    <android.widget.Button class="android.widget.Button" text="Sign in with Google"
        resource-id="com.example.shop:id/google" clickable="true" enabled="true" displayed="true"
        bounds="[40,900][1040,1000]" />
    <android.widget.TextView class="android.widget.TextView" text="Price ($)" clickable="false" displayed="true"
        bounds="[40,1100][540,1200]" />
    <android.widget.TextView class="android.widget.TextView" text="Terms&#10;and conditions" clickable="false"
        displayed="true" bounds="[40,1300][540,1400]" />
    <android.widget.ImageView class="android.widget.ImageView" content-desc="Logo" clickable="false"
        displayed="true" bounds="[100,1500][200,1600]" />
    <android.widget.TextView class="android.widget.TextView" text="Gone" displayed="false" bounds="[0,0][0,0]" />
  </android.widget.FrameLayout>
</hierarchy>"""

# The shape XCUITest gives: type names as tags, name (identifier) / label / value, points.
IOS = """<?xml version="1.0" encoding="UTF-8"?>
<AppiumAUT>
  <XCUIElementTypeApplication type="XCUIElementTypeApplication" name="Shop" label="Shop" enabled="true"
      visible="true" accessible="false" x="0" y="0" width="390" height="844">
    <XCUIElementTypeStaticText type="XCUIElementTypeStaticText" value="Welcome back" name="Welcome back"
        label="Welcome back" enabled="true" visible="true" accessible="true" x="20" y="60" width="350" height="30"/>
    <XCUIElementTypeTextField type="XCUIElementTypeTextField" name="email" label="" value=""
        placeholderValue="Email address" enabled="true" visible="true" accessible="true"
        x="20" y="120" width="350" height="40"/>
    <XCUIElementTypeButton type="XCUIElementTypeButton" name="sign_in" label="Sign in" enabled="true"
        visible="true" accessible="true" x="20" y="200" width="350" height="44"/>
    <XCUIElementTypeButton type="XCUIElementTypeButton" name="hidden" label="Hidden" enabled="true"
        visible="false" accessible="true" x="20" y="900" width="350" height="44"/>
  </XCUIElementTypeApplication>
</AppiumAUT>"""


@pytest.fixture(scope="module")
def android() -> Node:
    return parse_source(ANDROID, "Android")


@pytest.fixture(scope="module")
def ios() -> Node:
    return parse_source(IOS, "iOS")


def ids(nodes: list[Node]) -> list[str]:
    return [
        n.attributes.get("resource-id", "").rsplit("/", 1)[-1]
        or n.attributes.get("text")
        or n.attributes.get("accessibilityText", "?")
        for n in nodes
    ]


def test_android_attributes_are_named_as_maestro_names_them(android: Node) -> None:
    email = find(android, Selector(id="email"))[0]
    assert email.attributes["hintText"] == "Email address"
    assert email.bounds == (40, 300, 1000, 100)
    assert email.center() == (540, 350)
    assert email.focused is True and email.clickable is True
    logo = find(android, Selector(text="Logo"))[0]
    assert logo.attributes["accessibilityText"] == "Logo"
    assert logo.text == "Logo"  # copyTextFrom falls back to the accessibility text


def test_text_is_a_regular_expression_over_the_whole_value_ignoring_case(android: Node) -> None:
    assert ids(find(android, Selector(text="sign in"))) == ["sign_in"]  # case does not matter
    assert ids(find(android, Selector(text="Sign in.*"))) == ["sign_in", "google"]
    assert find(android, Selector(text="Sign")) == []  # the whole value, not a part of it
    assert ids(find(android, Selector(text="Email address"))) == ["email"]  # the hint counts
    assert ids(find(android, Selector(text="Remember"))) == ["remember"]  # so does the content-desc
    assert [n.attributes["text"] for n in find(android, Selector(text="Price ($)"))] == ["Price ($)"]  # literal
    assert find(android, Selector(text="Terms and conditions"))  # a new line matches a space


def test_id_matches_the_whole_resource_id_or_the_part_after_the_slash(android: Node) -> None:
    assert ids(find(android, Selector(id="sign_in"))) == ["sign_in"]
    assert ids(find(android, Selector(id="com.example.shop:id/sign_in"))) == ["sign_in"]
    assert ids(find(android, Selector(id="sign.*"))) == ["sign_in"]
    assert find(android, Selector(id="sign")) == []


def test_hidden_elements_are_never_found(android: Node, ios: Node) -> None:
    assert find(android, Selector(text="Gone")) == []
    assert find(ios, Selector(text="Hidden")) == []


def test_state_and_size_selectors(android: Node) -> None:
    assert ids(find(android, Selector(text="Sign in.*", enabled=True))) == ["google"]
    assert ids(find(android, Selector(text="Sign in.*", enabled=False))) == ["sign_in"]
    assert ids(find(android, Selector(id="remember", checked=True))) == ["remember"]
    assert find(android, Selector(id="remember", checked=False)) == []
    assert ids(find(android, Selector(id="email", focused=True))) == ["email"]
    assert ids(find(android, Selector(width=100, height=100))) == ["remember", "Logo"]
    assert ids(find(android, Selector(width=95, height=105, tolerance=5))) == ["remember", "Logo"]
    assert find(android, Selector(width=95, tolerance=4)) == []
    assert "Logo" in ids(find(android, Selector(traits="square")))


def test_relative_selectors_order_by_distance(android: Node) -> None:
    below = find(android, Selector(text="Sign in.*", below=Selector(id="email")))
    assert ids(below) == ["sign_in", "google"]  # nearest first
    assert ids(find(android, Selector(text="Sign in.*", above=Selector(text="Price.*")))) == ["google", "sign_in"]
    assert ids(find(android, Selector(id="remember", right_of=Selector(text="Remember me")))) == ["remember"]
    assert find(android, Selector(id="remember", left_of=Selector(text="Remember me"))) == []


def test_child_and_descendant_selectors(android: Node) -> None:
    assert ids(find(android, Selector(id="row", contains_child=Selector(id="remember")))) == ["row"]
    assert find(android, Selector(id="title", contains_child=Selector(id="remember"))) == []
    assert ids(find(android, Selector(contains_descendants=(Selector(text="Remember me"), Selector(id="remember")))))[
        0
    ] in ("row", "")  # the row (or the frame around it) holds both
    assert ids(find(android, Selector(text="Remember.*", child_of=Selector(id="row")))) == ["remember", "Remember me"]
    assert find(android, Selector(text="Remember.*", child_of=Selector(id="title"))) == []


def test_index_counts_top_to_bottom_and_from_the_end(android: Node) -> None:
    assert ids(find(android, Selector(text="Sign in.*", index=0))) == ["sign_in"]
    assert ids(find(android, Selector(text="Sign in.*", index=1))) == ["google"]
    assert ids(find(android, Selector(text="Sign in.*", index=-1))) == ["google"]
    assert find(android, Selector(text="Sign in.*", index=2)) == []


def test_without_an_index_clickable_matches_come_first(android: Node) -> None:
    # "Remember me" (not clickable) and the checkbox (clickable) both match; Maestro taps the clickable one.
    assert ids(find(android, Selector(text="Remember.*"))) == ["remember", "Remember me"]


def test_the_deepest_match_wins(android: Node) -> None:
    # The frame and the row contain the checkbox; only the deepest element matching the filter is kept.
    assert ids(find(android, Selector(enabled=True, checked=True))) == ["remember"]


def test_ios_attributes(ios: Node) -> None:
    email = find(ios, Selector(id="email"))[0]
    assert email.attributes["hintText"] == "Email address"
    assert email.bounds == (20, 120, 350, 40)
    button = find(ios, Selector(text="Sign in"))[0]
    assert button.attributes["resource-id"] == "sign_in"
    assert button.center() == (195, 222)
    assert ids(find(ios, Selector(text="welcome back"))) == ["Welcome back"]


def test_bad_regular_expressions_are_compared_as_text() -> None:
    assert text_matches("Price ($", "Price ($")
    assert not text_matches("Price ($", "Price")
    assert text_matches("a+b", "aab")
