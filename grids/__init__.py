"""Networks of record (pandapower), their profiles and DERs, and the fast power flow compiled from them."""
