#!/usr/bin/env python3
"""Writes lxml's verdicts for the schema differential test (core/tests/schema_diff.rs).

Run with the peers venv's python (`bash conformance/peers/setup.sh` prints the venv):

    <venv>/bin/python core/tests/data/schema/gen_expected.py

It validates exactly as Comet's receiver does: the bytes are parsed with
`lxml.etree.fromstring(..., XMLParser(resolve_entities=False))` (comet/utility/xml.py) and the
root element is checked with `etree.XMLSchema` built from the VOEvent-v2.0.xsd shipped in the
installed Comet package (comet/validator/schema.py). A parse error counts as invalid.

Outputs, next to this script:
- expected.tsv: one row per corpus packet (every *.xml here, plus ../gcn_swift_bat.xml):
  file, valid (1/0), lxml's first error message.
- values.tsv: one row per atomic case (VALUE_CASES below) embedded in a small packet:
  kind, valid (1/0), the whole document on one line.
"""

import glob
import os
import sys

import comet
import lxml.etree as etree

HERE = os.path.dirname(os.path.abspath(__file__))
XSD = os.path.join(os.path.dirname(comet.__file__), "schema", "VOEvent-v2.0.xsd")

ROOT = (
    '<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    'ivorn="{ivorn}" role="{role}" version="{version}">{body}</voe:VOEvent>'
)
COORDS = (
    "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation>"
    "<AstroCoordSystem/><AstroCoords>{}</AstroCoords></ObservationLocation>"
    "</ObsDataLocation></WhereWhen>"
)
# kind -> template for the packet body ({} is the value); "ivorn", "role" and "version" put
# the value on the root element instead.
TEMPLATES = {
    "date": "<Who><Date>{}</Date></Who>",
    "expires": '<Why expires="{}"><Name/></Why>',
    "float": '<Why importance="{}"><Name/></Why>',
    "float_text": COORDS.format("<Time><Error>{}</Error></Time>"),
    "probability": '<Why><Inference probability="{}"><Name/></Inference></Why>',
    "uri": '<Reference uri="{}"/>',
    "uri_text": "<Who><AuthorIVORN>{}</AuthorIVORN></Who>",
    "id": '<WhereWhen id="{}"/>',
    "coord_system": COORDS.replace("<AstroCoordSystem/>", '<AstroCoordSystem id="{}"/>').replace(
        "<AstroCoords>{}</AstroCoords>", "<AstroCoords/>"
    ),
    "data_type": '<What><Param dataType="{}"/></What>',
    "cite": '<Citations><EventIVORN cite="{}">x</EventIVORN></Citations>',
    "body": "{}",
}

# (kind, value). Values are XML as written in the document: use character references for
# tabs and newlines, so that each document fits on one TSV line.
VALUE_CASES = [
    # xs:dateTime (libxml2: no leading whitespace; trailing whitespace only after a zone)
    *[("date", v) for v in [
        "2020-01-01T00:00:00", "2020-01-01T00:00:00Z", "2020-01-01T00:00:00+14:00",
        "2020-01-01T00:00:00-14:00", "2020-01-01T00:00:00+14:01", "2020-01-01T00:00:00-00:00",
        "2020-01-01T00:00:00+24:00", "2020-01-01T00:00:00+0100", "2020-01-01T00:00:00z",
        "2020-01-01T00:00:00.5", "2020-01-01T00:00:00.", "2020-01-01T00:00:00.000001",
        "2020-01-01T24:00:00", "2020-01-01T24:00:00.0", "2020-01-01T24:00:00.1",
        "2020-01-01T24:00:01", "2020-01-01T23:59:60", "2020-01-01T23:59:59.999999",
        "2020-01-01T23:59:59.99999999999999999999", "2020-01-01T00:60:00",
        "2020-02-29T00:00:00", "2021-02-29T00:00:00", "1900-02-29T00:00:00",
        "2000-02-29T00:00:00", "-0004-02-29T00:00:00", "-0001-02-29T00:00:00",
        "0000-01-01T00:00:00", "-0001-01-01T00:00:00", "+2020-01-01T00:00:00",
        "12020-01-01T00:00:00", "02020-01-01T00:00:00", "020-01-01T00:00:00",
        "9999999999999999999-01-01T00:00:00", "2020-13-01T00:00:00", "2020-00-01T00:00:00",
        "2020-01-00T00:00:00", "2020-04-31T00:00:00", "2020-1-01T00:00:00",
        "2020-01-01", "2020-01-01T00:00", "2020-01-01 00:00:00", "12:00:00", "--01-01",
        "", " 2020-01-01T00:00:00", "2020-01-01T00:00:00 ", "2020-01-01T00:00:00Z ",
        "2020-01-01T00:00:00Z&#10;", "2020-01-01T00:00:00+01:00&#9;", "&#9;2020-01-01T00:00:00",
        "2020-01-01T00:00:00Z x", "2020-01-01T00:00:00ZZ",
    ]],
    *[("expires", v) for v in [
        "2020-01-01T00:00:00", " 2020-01-01T00:00:00 ", "2020-01-01T00:00:00Z&#9;", "2020-06-20",
    ]],
    # xs:float (libxml2: `1e` is a number; NaN/INF must end the value)
    *[("float", v) for v in [
        "1", "1.5", ".5", "5.", ".", "+5", "-5", "+-5", "--5", "1e5", "1E5", "1e+5", "1e-5",
        "1e", "1e+", "-.e5", "e5", "INF", "-INF", "+INF", "NaN", "-NaN", "nan", "inf",
        "Infinity", "1,5", "1 5", "0x10", "1e400", "1e99999999999999999999", "1.5e-3x", "",
        " 1.5 ", "1.5&#10;", "&#10;1.5", "NaN ", " NaN", "INF ", " -INF", "-INF&#10;", "1e5 ",
        "&#160;1", "١",
    ]],
    *[("float_text", v) for v in ["30", " 30 ", "30 s", "", "3.0e1", "&#32;3&#32;"]],
    # smallFloat: xs:float in [0.0, 1.0], compared in single precision
    *[("probability", v) for v in [
        "0", "1", "0.5", "-0", "-0.0000001", "-1e-50", "1.0000001", "1.00000001",
        "1.00000005", "1.00000006", "1.0000000596046448", "NaN", "INF", "-INF", "1e", "5e-",
        "0.5e+", "2", "1e-99999999999999999999", " 0.5 ",
        "0.000000000000000000000000000000000000000000000000001e51",
    ]],
    # xs:anyURI (libxml2: collapse, map unsafe characters to `_`, RFC 3986 reference)
    *[("uri", v) for v in [
        "", " ", "a", "a b", " a#b ", "a# b", "a#b#c", "a%zz", "a%2", "a%2g", "a%2F", "%", "#",
        "?#", "//", "///", "//@", "//a:", "a:", ":b", "1a:b", "a:b", "a://b:", "a:[b]",
        "http://h:x/", "http://[::1]:80/x", "http://[::1/x", "http://u@h:99999999999/x",
        "http://u@h:2147483647/x", "http://u@h:2147483648/x", "http://u:p@h/x",
        "http://192.168.0.1:8080/x", "a?b[1]", "a#b[1]", "a/b[1]", "é", "http://é.example/",
        "a{b}|c^d`e\\f", "a&lt;b&gt;", "&quot;quoted&quot;", "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234-567",
        "ivo://ca.chimenet.frb/FRB-DETECTION-#2022-11-19-02:12:43.164293UTC+0000_ae104a28a784",
        "mailto:someone@example.org", "urn:isbn:0451450523", "../up/../x", "./a:b",
        "a/b:c", "?q=[1]", "http://h/p?q#f", "http://h:/p", "h:80", "ivo://a.b/c#d e",
        "ivo://auth/res#local_ID&amp;x", "file:///etc/hosts", "http:///x", "x:y:z",
        "a/%41", "a/%4", "a b%20c", "&#9;a&#9;", "a&#10;b",
    ]],
    *[("uri_text", v) for v in ["", "  ", "a#b#c", " ivo://a.b/c ", "ivo://a b/c", "ivo://a.b/c d#e", "http://h:x/"]],
    # xs:ID (NCName, surrounding whitespace allowed)
    *[("id", v) for v in [
        "a", "_a", "a1", "a-b.c_d", "1a", "-a", ".a", "a:b", "", " ", " a1 ", "&#10;a&#10;",
        "a b", "é", "aé", "a·b", "a&#x301;", "٣a", "a٣",
    ]],
    # enumerations and the fixed version
    *[("role", v) for v in [
        "observation", "prediction", "utility", "test", "alert", " test", "test ", "Test", "",
        "test&#10;",
    ]],
    *[("version", v) for v in ["2.0", " 2.0 ", "2.0&#10;", "&#9;2.0", "2.00", "2", "2.0 x", "1.1", ""]],
    *[("ivorn", v) for v in ["ivo://a.b/c#d", "", "ivo://a.b/c#d#e", "ivo://a.b/c d"]],
    *[("coord_system", v) for v in [
        "UTC-FK5-TOPO", "TDB-ICRS-BARY", "UTC-GEOD-TOPO", "GPS-ICRS-GEO", "ICRS", " UTC-FK5-TOPO", "",
    ]],
    *[("data_type", v) for v in ["string", "float", "int", "double", "bool", "", " int"]],
    *[("cite", v) for v in ["followup", "supersedes", "retraction", "follow-up", ""]],
    # structure: the packet body itself
    *[("body", v) for v in [
        "", " ", " x ", "&#32;", "&#160;", "&amp;", "<![CDATA[ ]]>", "<![CDATA[]]>", "<![CDATA[x]]>",
        "<!-- c -->", "<?pi x?>",
        '<Reference uri="x"> </Reference>', '<Reference uri="x"><!-- c --></Reference>',
        '<Reference uri="x"><?pi x?></Reference>', '<Reference uri="x"><![CDATA[]]></Reference>',
        '<Reference uri="x">&#32;</Reference>', '<Reference uri="x"></Reference>', "<Reference/>",
        '<Reference uri="x"><Reference uri="y"/></Reference>',
        "<How/>", "<How><Description/></How>", "<How><Name/></How>",
        '<How><Description/><Reference uri="x"/><Description/></How>',
        "<Why/>", "<Why><Name/><Inference><Concept/></Inference><Name/></Why>", "<Why><Inference/></Why>",
        "<What/>", "<What> </What>", "<WhereWhen/>", "<Citations/>", "<Citations><EventIVORN/></Citations>",
        "<Citations><EventIVORN/><EventIVORN/><Description/></Citations>",
        "<Citations><EventIVORN/><Description/><Description/></Citations>",
        "<Citations><EventIVORN/><Description/><EventIVORN/></Citations>",
        "<Citations><Description/><EventIVORN/></Citations>",
        "<Citations><EventIVORN>x<b/></EventIVORN></Citations>",
        "<Who/>", "<Who><Author/></Who>", "<Who><Author><title/></Author></Who>",
        "<Who><Author><title/><title/><contributor/></Author></Who>", "<Who/><Who/>",
        "<Who><Description/><Description/></Who>", "<Who><Foo/></Who>",
        '<Who><Description/><Reference uri="x"/><Date>2020-01-01T00:00:00</Date><AuthorIVORN/><Author><title/></Author></Who>',
        "<What><Table/></What>", "<What><Table><Data/></Table></What>", "<What><Table><Data><TR/></Data></Table></What>",
        "<What><Table><Data><TR><TD/></TR></Data><Data><TR><TD/></TR></Data></Table></What>",
        "<What><Table><Data><TR><TD><b/></TD></TR></Data></Table></What>",
        "<What><Group/></What>", "<What><Group><Group/></Group></What>", "<What><Field/></What>",
        "<What><Param/><Param/></What>", "<What><Param><Value/><Value/><Description/><Description/></Param></What>",
        '<What><Param id="x"/></What>', '<What><Param name="a" value="b" ucd="c" unit="d" utype="e" dataType="int"/></What>',
        "<What><Param><Param/></Param></What>", '<What><Table name="t" type="u"><Field utype="x"/></Table></What>',
        "<Description>x<b/></Description>", '<Description foo="x">x</Description>',
        '<Description xml:lang="en">x</Description>', "<Description><!-- c -->x<?p?></Description>",
        "<WhereWhen><ObsDataLocation/></WhereWhen>",
        "<WhereWhen><ObsDataLocation><ObservatoryLocation/></ObsDataLocation></WhereWhen>",
        "<WhereWhen><ObsDataLocation><ObservationLocation><AstroCoordSystem/><AstroCoords/></ObservationLocation><ObservatoryLocation/></ObsDataLocation></WhereWhen>",
        "<WhereWhen><ObsDataLocation><ObservatoryLocation/><ObservationLocation><AstroCoordSystem/><AstroCoords/><AstroCoords/></ObservationLocation></ObsDataLocation></WhereWhen>",
        COORDS.format("<Time/>"), COORDS.format("<Time><TimeInstant/></Time>"),
        COORDS.format("<Time><TimeInstant><ISOTime/><ISOTime/><TimeOffset>1</TimeOffset></TimeInstant><TimeInstant/></Time>"),
        COORDS.format("<Time><TimeInstant><TimeOffset>x</TimeOffset></TimeInstant></Time>"),
        COORDS.format("<Position2D/>"), COORDS.format("<Position2D><Value2/><Error2Radius>1</Error2Radius></Position2D>"),
        COORDS.format("<Position2D><Value2><C1>1</C1><C2>2</C2></Value2></Position2D>"),
        COORDS.format("<Position2D><Error2Radius>1</Error2Radius><Value2><C2>2</C2><C1>1</C1></Value2></Position2D>"),
        COORDS.format("<Position2D><Value2><C1>1</C1><C2>2</C2><C1>1</C1></Value2><Error2Radius>1</Error2Radius></Position2D>"),
        COORDS.format("<Position2D><Value2><C1>1</C1><C2>2</C2><C3>3</C3></Value2><Error2Radius>1</Error2Radius></Position2D>"),
        COORDS.format("<Position2D><Name3/><Value2><C1>1</C1><C2>2</C2></Value2><Error2Radius>1</Error2Radius></Position2D>"),
        COORDS.format("<Position3D/>"), COORDS.format("<Position3D><Value3><C1>1</C1><C2>2</C2><C3>3</C3></Value3></Position3D>"),
        COORDS.format("<Position3D><Value3><C1>1</C1><C2>2</C2></Value3></Position3D>"),
        COORDS.format("<Time/><Time/>"),
        COORDS.replace("<AstroCoordSystem/>", "<AstroCoordSystem> </AstroCoordSystem>").format("<Time/>"),
        COORDS.replace("<AstroCoordSystem/>", "<AstroCoordSystem></AstroCoordSystem>").format("<Time/>"),
        "<voe:Who/>", "<xs:Who/>", "<foo:Who/>", '<Who xmlns="http://www.ivoa.net/xml/VOEvent/v2.0"/>',
        '<Who xmlns=""/>', '<Who xmlns:x="urn:x" x:a="1"/>', '<Who voe:a="1"/>',
        '<Who xsi:type="voe:Who"/>', '<Who xsi:type="voe:What"/>', '<Who xsi:type="Who"/>',
        '<Who xsi:type=" voe:Who"/>', '<Description xsi:type="xs:string">x</Description>',
        '<Description xsi:type="xs:float">x</Description>', '<Who xsi:nil="true"/>',
        '<Who xsi:schemaLocation="a b" xsi:noNamespaceSchemaLocation="c"/>', '<Who xsi:foo="x"/>',
        '<Who xmlns:x2="http://www.w3.org/2001/XMLSchema-instance" x2:schemaLocation="a" xsi:schemaLocation="b"/>',
        "<Bogus/>",
    ]],
]


def verdict(data):
    """(valid, message) as Comet's receiver sees `data` (bytes)."""
    try:
        element = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError as e:
        return 0, "parse error: " + str(e)
    if list(element.iter(etree.Entity)):
        return 0, "entity"
    if SCHEMA.validate(element):
        return 1, ""
    return 0, SCHEMA.error_log.last_error.message


def document(kind, value):
    root = {"ivorn": "ivo://example.org/values#1", "role": "test", "version": "2.0", "body": ""}
    if kind in ("ivorn", "role", "version"):
        root[kind] = value
    else:
        root["body"] = TEMPLATES[kind].format(value)
    return ROOT.format(**root)


def one_line(text):
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


SCHEMA = etree.XMLSchema(etree.parse(XSD))


def main():
    header = "# lxml %s, libxml2 %s, schema %s\n" % (
        ".".join(map(str, etree.LXML_VERSION[:3])),
        ".".join(map(str, etree.LIBXML_VERSION)),
        os.path.relpath(XSD, os.path.dirname(comet.__file__)),
    )
    files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(HERE, "*.xml")))
    files.append("../gcn_swift_bat.xml")
    with open(os.path.join(HERE, "expected.tsv"), "w", encoding="utf-8") as out:
        out.write(header + "# file\tvalid\tlxml message\n")
        for name in files:
            with open(os.path.join(HERE, name), "rb") as f:
                valid, message = verdict(f.read())
            out.write("%s\t%d\t%s\n" % (name, valid, one_line(message)))
    with open(os.path.join(HERE, "values.tsv"), "w", encoding="utf-8") as out:
        out.write(header + "# kind\tvalid\tdocument\n")
        for kind, value in VALUE_CASES:
            doc = document(kind, value)
            assert "\t" not in doc and "\n" not in doc, (kind, value)
            valid, _ = verdict(doc.encode("utf-8"))
            out.write("%s\t%d\t%s\n" % (kind, valid, doc))
    print("%d packets, %d value cases" % (len(files), len(VALUE_CASES)), file=sys.stderr)


if __name__ == "__main__":
    main()
