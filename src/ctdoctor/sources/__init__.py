"""Everything that reads the machine or a host image: HostRoot and one parser per source."""
