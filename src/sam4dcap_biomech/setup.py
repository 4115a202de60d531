from setuptools import find_packages, setup

package_name = "sam4dcap_biomech"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="sam4dcap developers",
    maintainer_email="dev@sam4dcap.invalid",
    description="sam4dcap biomechanics core and nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ik_node = sam4dcap_biomech.nodes.ik_node:main",
            "id_node = sam4dcap_biomech.nodes.id_node:main",
            "trial_writer_node = sam4dcap_biomech.nodes.trial_writer_node:main",
        ],
    },
)
