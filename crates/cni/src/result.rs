//! The ADD success result, shaped for each supported spec version, and parsed back from the
//! `prevResult` a runtime hands to CHECK and DEL.
//!
//! 1.1.0 and 1.0.0 share one shape (1.1.0 adds optional route fields this plugin does not use);
//! 0.4.0 additionally tags every IP with `"version": "4"` or `"6"`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::version::SpecVersion;

/// One interface created by the attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, lower case.
    pub mac: String,
    pub mtu: Option<u32>,
    /// The pod's netns path, or empty for a host-side interface.
    pub sandbox: String,
}

/// One address given to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix, as configured on the interface (`10.244.1.5/32`).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// One route in the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// An ADD result, independent of the spec version it will be printed as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
}

impl AddResult {
    /// The result JSON for `version`.
    pub fn to_json(&self, version: SpecVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                m.insert("mac".into(), json!(i.mac));
                if let Some(mtu) = i.mtu {
                    if version >= SpecVersion::V1_0_0 {
                        m.insert("mtu".into(), json!(mtu));
                    }
                }
                m.insert("sandbox".into(), json!(i.sandbox));
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if version == SpecVersion::V0_4_0 {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), json!(family));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(index) = ip.interface {
                    m.insert("interface".into(), json!(index));
                }
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    m.insert("gw".into(), json!(gw.to_string()));
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }

    /// Parses a `prevResult` of any supported version. Errors name the bad key
    /// (`prevResult.ips[0].address`) and are CNI error 7.
    pub fn from_prev_result(value: &Value) -> Result<Self, CniError> {
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("prevResult", "must be an object"))?;
        let mut result = AddResult::default();
        for (n, item) in array(obj, "interfaces")?.iter().enumerate() {
            let key = format!("prevResult.interfaces[{n}]");
            let o = item
                .as_object()
                .ok_or_else(|| invalid(&key, "must be an object"))?;
            result.interfaces.push(Interface {
                name: string(o, &key, "name")?.unwrap_or_default(),
                mac: string(o, &key, "mac")?.unwrap_or_default(),
                mtu: match o.get("mtu") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|m| u32::try_from(m).ok())
                            .ok_or_else(|| invalid(&format!("{key}.mtu"), "must be a number"))?,
                    ),
                },
                sandbox: string(o, &key, "sandbox")?.unwrap_or_default(),
            });
        }
        for (n, item) in array(obj, "ips")?.iter().enumerate() {
            let key = format!("prevResult.ips[{n}]");
            let o = item
                .as_object()
                .ok_or_else(|| invalid(&key, "must be an object"))?;
            let address = string(o, &key, "address")?
                .ok_or_else(|| invalid(&format!("{key}.address"), "is required"))?;
            result.ips.push(IpConfig {
                address: address.parse().map_err(|_| {
                    invalid(
                        &format!("{key}.address"),
                        &format!("{address:?} is not an address in CIDR notation"),
                    )
                })?,
                gateway: parse_opt_ip(o, &key, "gateway")?,
                interface: match o.get("interface") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        Some(v.as_u64().map(|i| i as usize).ok_or_else(|| {
                            invalid(&format!("{key}.interface"), "must be an index")
                        })?)
                    }
                },
            });
        }
        for (n, item) in array(obj, "routes")?.iter().enumerate() {
            let key = format!("prevResult.routes[{n}]");
            let o = item
                .as_object()
                .ok_or_else(|| invalid(&key, "must be an object"))?;
            let dst = string(o, &key, "dst")?
                .ok_or_else(|| invalid(&format!("{key}.dst"), "is required"))?;
            result.routes.push(Route {
                dst: dst.parse().map_err(|_| {
                    invalid(
                        &format!("{key}.dst"),
                        &format!("{dst:?} is not a prefix in CIDR notation"),
                    )
                })?,
                gw: parse_opt_ip(o, &key, "gw")?,
            });
        }
        Ok(result)
    }
}

fn invalid(key: &str, what: &str) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, format!("key \"{key}\": {what}"))
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(&format!("prevResult.{key}"), "must be an array")),
    }
}

fn string(obj: &Map<String, Value>, parent: &str, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("{parent}.{key}"), "must be a string")),
    }
}

fn parse_opt_ip(
    obj: &Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<IpAddr>, CniError> {
    match string(obj, parent, key)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            invalid(
                &format!("{parent}.{key}"),
                &format!("{s:?} is not an IP address"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cl0123456789a".into(),
                    mac: "0a:00:00:00:00:01".into(),
                    mtu: Some(1400),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:00:00:00:00:02".into(),
                    mtu: Some(1400),
                    sandbox: "/run/netns/pod".into(),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
        }
    }

    #[test]
    fn results_for_0_4_0_tag_each_ip_with_its_family() {
        let v = sample().to_json(SpecVersion::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn results_for_1_x_have_no_ip_version_and_carry_the_mtu() {
        for version in [SpecVersion::V1_0_0, SpecVersion::V1_1_0] {
            let v = sample().to_json(version);
            assert_eq!(v["cniVersion"], version.as_str());
            assert!(v["ips"][0].get("version").is_none());
            assert_eq!(v["interfaces"][1]["mtu"], 1400);
            assert_eq!(v["ips"][0]["interface"], 1);
            assert_eq!(v["routes"][0]["gw"], "169.254.1.1");
        }
    }

    #[test]
    fn a_printed_result_of_every_version_parses_back_to_the_same_result() {
        for version in [SpecVersion::V1_0_0, SpecVersion::V1_1_0] {
            let parsed = AddResult::from_prev_result(&sample().to_json(version)).unwrap();
            assert_eq!(parsed, sample());
        }
        let old = AddResult::from_prev_result(&sample().to_json(SpecVersion::V0_4_0)).unwrap();
        assert_eq!(old.ips, sample().ips);
        assert_eq!(old.interfaces[1].mtu, None);
    }

    #[test]
    fn a_bad_prev_result_address_names_its_key() {
        let bad = json!({"ips": [{"address": "10.0.0.300/32"}]});
        let err = AddResult::from_prev_result(&bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(
            err.details.contains("prevResult.ips[0].address"),
            "{}",
            err.details
        );
    }
}
