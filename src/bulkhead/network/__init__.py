"""Container networks: bridges, veths, IPAM, NAT and published ports, DNS."""
