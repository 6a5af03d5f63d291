//! The VOEvent 2.0 schema (Comet's `VOEvent-v2.0.xsd`) as a table: one [`Type`] per XSD type,
//! in the XSD's order, each with the XSD's type name, attributes and content model. Element
//! particles keep the XSD's `minOccurs`/`maxOccurs`; the content-model kind says how they
//! combine (see [`Content`]).

use crate::message::VOEVENT_2_0_NS;

use super::XS_NS;

/// A type of the XSD: its attributes and content model.
#[derive(Debug)]
pub(super) struct Type {
    /// The XSD type name, for messages (`xs:string`, `Who`, ...).
    pub(super) name: &'static str,
    /// The type's qualified name `(namespace, local)`, matched by `xsi:type`; `None` for the
    /// anonymous types of `VOEvent` and `Author`.
    pub(super) qname: Option<(&'static str, &'static str)>,
    pub(super) attrs: &'static [Attr],
    pub(super) content: Content,
}

/// A content model.
#[derive(Debug)]
pub(super) enum Content {
    /// `xs:all`: each particle at most once, in any order; those with `min == 1` are required.
    All(&'static [Particle]),
    /// `xs:choice maxOccurs="unbounded"`: any number of the particles in any order; at least
    /// one unless a particle has `min == 0` (then the choice can be satisfied by nothing).
    Choice(&'static [Particle]),
    /// `xs:sequence`: the particles in order, each between `min` and `max` times.
    Sequence(&'static [Particle]),
    /// An empty `xs:sequence`: no child element and no character at all.
    Empty,
    /// Simple content: text of the given type, no child element.
    Simple(Value),
}

/// An element particle: `<xs:element name=… type=… minOccurs=… maxOccurs=…/>`.
#[derive(Debug)]
pub(super) struct Particle {
    pub(super) name: &'static str,
    pub(super) ty: &'static Type,
    pub(super) min: u32,
    pub(super) max: u32,
}

/// An attribute declaration.
#[derive(Debug)]
pub(super) struct Attr {
    pub(super) name: &'static str,
    pub(super) ty: Value,
    pub(super) required: bool,
}

/// A simple type, of an attribute or of an element's text.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    /// `xs:string`: anything.
    String,
    /// `xs:anyURI`.
    AnyUri,
    /// `xs:dateTime`.
    DateTime,
    /// `xs:float`.
    Float,
    /// `smallFloat`: `xs:float` with `minInclusive 0.0` and `maxInclusive 1.0`.
    SmallFloat,
    /// `xs:ID` (an NCName; unique, trivially, as `WhereWhen` is the only element with one).
    Id,
    /// An `xs:string` enumeration.
    Enum(&'static Enumeration),
    /// `xs:token` with a fixed value.
    FixedToken(&'static str),
}

/// A named enumeration restricting `xs:string`.
#[derive(Debug)]
pub(super) struct Enumeration {
    pub(super) name: &'static str,
    pub(super) values: &'static [&'static str],
}

pub(super) const fn one(name: &'static str, ty: &'static Type) -> Particle {
    Particle {
        name,
        ty,
        min: 1,
        max: 1,
    }
}

pub(super) const fn opt(name: &'static str, ty: &'static Type) -> Particle {
    Particle {
        name,
        ty,
        min: 0,
        max: 1,
    }
}

pub(super) const fn many(name: &'static str, ty: &'static Type) -> Particle {
    Particle {
        name,
        ty,
        min: 0,
        max: u32::MAX,
    }
}

pub(super) const fn some(name: &'static str, ty: &'static Type) -> Particle {
    Particle {
        name,
        ty,
        min: 1,
        max: u32::MAX,
    }
}

pub(super) const fn attr(name: &'static str, ty: Value) -> Attr {
    Attr {
        name,
        ty,
        required: false,
    }
}

pub(super) const fn required(name: &'static str, ty: Value) -> Attr {
    Attr {
        name,
        ty,
        required: true,
    }
}

pub(super) const fn simple(name: &'static str, local: &'static str, value: Value) -> Type {
    Type {
        name,
        qname: Some((XS_NS, local)),
        attrs: &[],
        content: Content::Simple(value),
    }
}

pub(super) const fn named(name: &'static str, attrs: &'static [Attr], content: Content) -> Type {
    Type {
        name,
        qname: Some((VOEVENT_2_0_NS, name)),
        attrs,
        content,
    }
}

pub(super) static STRING: Type = simple("xs:string", "string", Value::String);
pub(super) static ANY_URI: Type = simple("xs:anyURI", "anyURI", Value::AnyUri);
pub(super) static DATE_TIME: Type = simple("xs:dateTime", "dateTime", Value::DateTime);
pub(super) static FLOAT: Type = simple("xs:float", "float", Value::Float);

pub(super) static ROLE_VALUES: Enumeration = Enumeration {
    name: "roleValues",
    values: &["observation", "prediction", "utility", "test"],
};
pub(super) static DATA_TYPE: Enumeration = Enumeration {
    name: "dataType",
    values: &["string", "float", "int"],
};
/// `idValues` (the XSD lists GPS-ICRS-TOPO, GPS-FK5-TOPO and GPS-ICRS-GEO twice; once here).
pub(super) static ID_VALUES: Enumeration = Enumeration {
    name: "idValues",
    values: &[
        "TT-ICRS-TOPO",
        "UTC-ICRS-TOPO",
        "TT-FK5-TOPO",
        "UTC-FK5-TOPO",
        "GPS-ICRS-TOPO",
        "GPS-FK5-TOPO",
        "TT-ICRS-GEO",
        "UTC-ICRS-GEO",
        "TT-FK5-GEO",
        "UTC-FK5-GEO",
        "GPS-ICRS-GEO",
        "TDB-ICRS-BARY",
        "TDB-FK5-BARY",
        "UTC-GEOD-TOPO",
    ],
};
pub(super) static CITE_VALUES: Enumeration = Enumeration {
    name: "citeValues",
    values: &["followup", "supersedes", "retraction"],
};

/// `<xs:element name="VOEvent">`: an anonymous type, `xs:all` of at most one of each section.
pub(super) static VOEVENT: Type = Type {
    name: "VOEvent",
    qname: None,
    attrs: &[
        required("version", Value::FixedToken("2.0")),
        required("ivorn", Value::AnyUri),
        attr("role", Value::Enum(&ROLE_VALUES)),
    ],
    content: Content::All(&[
        opt("Who", &WHO),
        opt("What", &WHAT),
        opt("WhereWhen", &WHERE_WHEN),
        opt("How", &HOW),
        opt("Why", &WHY),
        opt("Citations", &CITATIONS),
        opt("Description", &STRING),
        opt("Reference", &REFERENCE),
    ]),
};

pub(super) static WHO: Type = named(
    "Who",
    &[],
    Content::All(&[
        opt("AuthorIVORN", &ANY_URI),
        opt("Date", &DATE_TIME),
        opt("Description", &STRING),
        opt("Reference", &REFERENCE),
        opt("Author", &AUTHOR),
    ]),
);

/// `Who/Author`: an anonymous `xs:choice maxOccurs="unbounded"` (so at least one child).
pub(super) static AUTHOR: Type = Type {
    name: "Author",
    qname: None,
    attrs: &[],
    content: Content::Choice(&[
        one("title", &STRING),
        one("shortName", &STRING),
        one("logoURL", &ANY_URI),
        one("contactName", &STRING),
        one("contactEmail", &STRING),
        one("contactPhone", &STRING),
        one("contributor", &STRING),
    ]),
};

pub(super) static WHAT: Type = named(
    "What",
    &[],
    Content::Choice(&[
        many("Param", &PARAM),
        many("Group", &GROUP),
        many("Table", &TABLE),
        many("Description", &STRING),
        many("Reference", &REFERENCE),
    ]),
);

pub(super) static PARAM: Type = named(
    "Param",
    &[
        attr("name", Value::String),
        attr("ucd", Value::String),
        attr("value", Value::String),
        attr("unit", Value::String),
        attr("dataType", Value::Enum(&DATA_TYPE)),
        attr("utype", Value::String),
    ],
    Content::Choice(&[
        opt("Description", &STRING),
        many("Reference", &REFERENCE),
        opt("Value", &STRING),
    ]),
);

pub(super) static GROUP: Type = named(
    "Group",
    &[attr("name", Value::String), attr("type", Value::String)],
    Content::Choice(&[
        some("Param", &PARAM),
        opt("Description", &STRING),
        opt("Reference", &REFERENCE),
    ]),
);

pub(super) static TABLE: Type = named(
    "Table",
    &[attr("name", Value::String), attr("type", Value::String)],
    Content::Choice(&[
        opt("Description", &STRING),
        opt("Reference", &REFERENCE),
        many("Param", &PARAM),
        many("Field", &FIELD),
        one("Data", &DATA),
    ]),
);

pub(super) static FIELD: Type = named(
    "Field",
    &[
        attr("name", Value::String),
        attr("ucd", Value::String),
        attr("unit", Value::String),
        attr("dataType", Value::Enum(&DATA_TYPE)),
        attr("utype", Value::String),
    ],
    Content::Choice(&[opt("Description", &STRING), opt("Reference", &REFERENCE)]),
);

pub(super) static DATA: Type = named("Data", &[], Content::Choice(&[one("TR", &TR)]));

pub(super) static TR: Type = named("TR", &[], Content::Choice(&[one("TD", &STRING)]));

pub(super) static WHERE_WHEN: Type = named(
    "WhereWhen",
    &[attr("id", Value::Id)],
    Content::Choice(&[
        one("ObsDataLocation", &OBS_DATA_LOCATION),
        opt("Description", &STRING),
        opt("Reference", &REFERENCE),
    ]),
);

pub(super) static OBS_DATA_LOCATION: Type = named(
    "ObsDataLocation",
    &[],
    Content::All(&[
        one("ObservatoryLocation", &OBSERVATORY_LOCATION),
        one("ObservationLocation", &OBSERVATION_LOCATION),
    ]),
);

pub(super) static OBSERVATION_LOCATION: Type = named(
    "ObservationLocation",
    &[],
    Content::All(&[
        one("AstroCoordSystem", &ASTRO_COORD_SYSTEM),
        one("AstroCoords", &ASTRO_COORDS),
    ]),
);

pub(super) static ASTRO_COORD_SYSTEM: Type = named(
    "AstroCoordSystem",
    &[attr("id", Value::Enum(&ID_VALUES))],
    Content::Empty,
);

pub(super) static ASTRO_COORDS: Type = named(
    "AstroCoords",
    &[attr("coord_system_id", Value::Enum(&ID_VALUES))],
    Content::All(&[
        opt("Time", &TIME),
        opt("Position2D", &POSITION_2D),
        opt("Position3D", &POSITION_3D),
    ]),
);

pub(super) static TIME: Type = named(
    "Time",
    &[attr("unit", Value::String)],
    Content::Choice(&[one("TimeInstant", &TIME_INSTANT), opt("Error", &FLOAT)]),
);

pub(super) static TIME_INSTANT: Type = named(
    "TimeInstant",
    &[],
    Content::Choice(&[
        // ISOTime is an xs:string in this XSD: any text passes.
        opt("ISOTime", &STRING),
        opt("TimeOffset", &FLOAT),
        opt("TimeScale", &STRING),
    ]),
);

pub(super) static POSITION_2D: Type = named(
    "Position2D",
    &[attr("unit", Value::String)],
    Content::All(&[
        opt("Name1", &STRING),
        opt("Name2", &STRING),
        one("Value2", &VALUE2),
        one("Error2Radius", &FLOAT),
    ]),
);

pub(super) static POSITION_3D: Type = named(
    "Position3D",
    &[attr("unit", Value::String)],
    Content::All(&[
        opt("Name1", &STRING),
        opt("Name2", &STRING),
        opt("Name3", &STRING),
        one("Value3", &VALUE3),
    ]),
);

pub(super) static VALUE2: Type = named(
    "Value2",
    &[],
    Content::All(&[one("C1", &FLOAT), one("C2", &FLOAT)]),
);

pub(super) static VALUE3: Type = named(
    "Value3",
    &[],
    Content::All(&[one("C1", &FLOAT), one("C2", &FLOAT), one("C3", &FLOAT)]),
);

pub(super) static OBSERVATORY_LOCATION: Type = named(
    "ObservatoryLocation",
    &[attr("id", Value::String)],
    Content::All(&[
        opt("AstroCoordSystem", &ASTRO_COORD_SYSTEM),
        opt("AstroCoords", &ASTRO_COORDS),
    ]),
);

pub(super) static HOW: Type = named(
    "How",
    &[],
    Content::Choice(&[one("Description", &STRING), one("Reference", &REFERENCE)]),
);

pub(super) static WHY: Type = named(
    "Why",
    &[
        attr("importance", Value::Float),
        attr("expires", Value::DateTime),
    ],
    Content::Choice(&[
        one("Name", &STRING),
        one("Concept", &STRING),
        one("Inference", &INFERENCE),
        one("Description", &STRING),
        one("Reference", &REFERENCE),
    ]),
);

pub(super) static INFERENCE: Type = named(
    "Inference",
    &[
        attr("probability", Value::SmallFloat),
        attr("relation", Value::String),
    ],
    Content::Choice(&[
        one("Name", &STRING),
        one("Concept", &STRING),
        one("Description", &STRING),
        one("Reference", &REFERENCE),
    ]),
);

pub(super) static CITATIONS: Type = named(
    "Citations",
    &[],
    Content::Sequence(&[
        some("EventIVORN", &EVENT_IVORN),
        opt("Description", &STRING),
    ]),
);

/// `EventIVORN`: `xs:simpleContent` extending `xs:string` with a `cite` attribute.
pub(super) static EVENT_IVORN: Type = named(
    "EventIVORN",
    &[attr("cite", Value::Enum(&CITE_VALUES))],
    Content::Simple(Value::String),
);

pub(super) static REFERENCE: Type = named(
    "Reference",
    &[
        required("uri", Value::AnyUri),
        attr("type", Value::String),
        attr("mimetype", Value::String),
        attr("meaning", Value::AnyUri),
    ],
    Content::Empty,
);
